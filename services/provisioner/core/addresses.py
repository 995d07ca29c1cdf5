"""Finding a VM's backend address: pure parsing of what libvirt reports, and the static pool.

libvirt's `interfaceAddresses` answers per interface with a MAC and a list of addresses. A
lease table can hold stale entries for a MAC we reused or for another guest, so an address only
counts when it sits on an interface whose MAC is one of the clone's own.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

IPV4 = 0
"""libvirt's VIR_IP_ADDR_TYPE_IPV4 (kept here so this module needs no libvirt import)."""


def join_address(ip: str, port: int) -> str:
    """`ip:port`, with IPv6 in brackets."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def normalise_mac(mac: str) -> str:
    return mac.strip().lower()


def pick_address(interfaces: Mapping[str, Any], macs: Iterable[str], port: int) -> str | None:
    """The first usable address on one of `macs`' interfaces (IPv4 preferred), or None.

    Loopback, link-local and unspecified addresses are skipped: a guest agent reports `lo`
    and fe80:: addresses that no balancer can reach.
    """
    wanted = {normalise_mac(mac) for mac in macs}
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for info in interfaces.values():
        if not isinstance(info, Mapping) or normalise_mac(str(info.get("hwaddr") or "")) not in wanted:
            continue
        found.extend(_usable(info.get("addrs") or []))
    if not found:
        return None
    found.sort(key=lambda ip: ip.version)
    return join_address(str(found[0]), port)


def _usable(addrs: Iterable[Any]) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    result = []
    for entry in addrs:
        try:
            ip = ipaddress.ip_address(str(entry.get("addr", "")))
        except (ValueError, AttributeError):
            continue
        if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast):
            result.append(ip)
    return result


def leases_as_interfaces(leases: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A network's `DHCPLeases()` list in `interfaceAddresses`' shape, so one picker reads both."""
    shaped: dict[str, Any] = {}
    for index, lease in enumerate(leases):
        if isinstance(lease, Mapping) and lease.get("mac") and lease.get("ipaddr"):
            address = {"addr": lease["ipaddr"], "prefix": lease.get("prefix"), "type": lease.get("type")}
            shaped[f"lease{index}"] = {"hwaddr": lease["mac"], "addrs": [address]}
    return shaped


def parse_static_pool(text: str, default_port: int) -> tuple[str, ...]:
    """`"10.0.0.5, 10.0.0.6:8443, [::1]:443"` -> normalised `host:port` entries; ValueError if bad."""
    pool: list[str] = []
    for raw in (part.strip() for part in text.split(",")):
        if raw:
            entry = _parse_entry(raw, default_port)
            if entry in pool:
                raise ValueError(f"address {raw!r} is listed twice")
            pool.append(entry)
    return tuple(pool)


def _parse_entry(raw: str, default_port: int) -> str:
    host, port = raw, default_port
    if raw.startswith("["):
        host, _, rest = raw[1:].partition("]")
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            raise ValueError(f"{raw!r} is not ip, ip:port or [ipv6]:port")
        port = int(rest[1:]) if rest else default_port
    elif raw.count(":") == 1:
        host, _, port_text = raw.partition(":")
        if not port_text.isdigit():
            raise ValueError(f"{raw!r} has a port that is not a number")
        port = int(port_text)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{raw!r} is not an IP address") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"{raw!r} has a port outside 1-65535")
    return join_address(str(ip), port)


def free_static(pool: Iterable[str], used: Iterable[str | None]) -> str | None:
    """The first pool address no live VM holds, or None when the pool is used up."""
    taken = set(used)
    return next((address for address in pool if address not in taken), None)
