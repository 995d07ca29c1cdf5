"""The lab's libvirt objects: its DHCP network, and the teardown of everything it holds.

The lab's libvirtd is private to the lab, so every domain, volume, pool and network it knows
is ours to remove; teardown never needs to guess ownership.
"""

from __future__ import annotations

from typing import Any

import libvirt

SUBNET_PREFIX = "10.77.0"
"""Private addresses that exist only inside the lab's namespace (a /24: `<prefix>.0/24`)."""


def network_xml(name: str, subnet: str = SUBNET_PREFIX, routed: bool = False) -> str:
    """A network with DHCP, so guests get leases the provisioner reads.

    Isolated (no `<forward>`) by default: a single lab needs no routing, and libvirt then also
    gives the guests no default route. `routed` makes it `<forward mode='open'/>`: the guests get
    the bridge as their gateway and libvirt adds no firewall rule, so the two-host lab's own routes
    (over its veth pair, see `ops.lab.pair`) carry the other namespace's traffic to them and back.
    """
    forward = "<forward mode='open'/>" if routed else ""
    return (
        f"<network><name>{name}</name>{forward}<bridge name='qfbr0' stp='off' delay='0'/>"
        f"<ip address='{subnet}.1' netmask='255.255.255.0'>"
        f"<dhcp><range start='{subnet}.10' end='{subnet}.250'/></dhcp></ip></network>"
    )


def ensure_network(conn: Any, name: str, subnet: str = SUBNET_PREFIX, routed: bool = False) -> None:
    """Define and start the network unless it already runs (start() may be called twice)."""
    known = {net.name(): net for net in conn.listAllNetworks()}
    net = known.get(name) or conn.networkDefineXML(network_xml(name, subnet, routed))
    if not net.isActive():
        net.create()


def teardown(conn: Any) -> list[str]:
    """Remove every domain, volume, pool and network this libvirtd holds; returns what failed."""
    problems: list[str] = []
    for domain in conn.listAllDomains():
        _attempt(problems, f"domain {domain.name()}", lambda d=domain: _remove_domain(d))
    for pool in conn.listAllStoragePools():
        _attempt(problems, f"pool {pool.name()}", lambda p=pool: _remove_pool(p))
    for net in conn.listAllNetworks():
        _attempt(problems, f"network {net.name()}", lambda n=net: _remove_network(n))
    return problems


def _attempt(problems: list[str], what: str, action: Any) -> None:
    try:
        action()
    except libvirt.libvirtError as error:
        problems.append(f"{what}: {error.get_error_message()}")


def _remove_domain(domain: Any) -> None:
    if domain.isActive():
        domain.destroy()
    domain.undefine()


def _remove_pool(pool: Any) -> None:
    if not pool.isActive():
        pool.create()
    pool.refresh()
    for volume in pool.listAllVolumes():
        volume.delete()
    pool.destroy()
    pool.undefine()


def _remove_network(net: Any) -> None:
    if net.isActive():
        net.destroy()
    net.undefine()
