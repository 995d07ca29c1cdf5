"""Address discovery parsing (MAC cross-check) and the static address pool."""

from __future__ import annotations

import pytest

from services.provisioner.core.addresses import free_static, leases_as_interfaces, parse_static_pool, pick_address

MAC = "52:54:00:12:34:56"


def _iface(mac: str, *addrs: str) -> dict[str, object]:
    return {"hwaddr": mac, "addrs": [{"addr": a, "prefix": 24, "type": 0} for a in addrs]}


def test_address_on_the_clone_mac_is_picked_with_the_port() -> None:
    """The address of the interface carrying the clone's MAC comes back as ip:port."""
    found = pick_address({"vnet0": _iface(MAC.upper(), "10.1.2.3")}, [MAC], 443)
    assert found == "10.1.2.3:443"


def test_addresses_on_other_macs_are_ignored() -> None:
    """A lease for a MAC that is not the clone's (stale or another guest) is never used."""
    assert pick_address({"vnet0": _iface("52:54:00:ff:ff:ff", "10.1.2.3")}, [MAC], 443) is None


def test_loopback_and_link_local_are_skipped_and_ipv4_preferred() -> None:
    """Agent answers with lo and fe80:: entries give the routable address, IPv4 before IPv6."""
    interfaces = {"lo": _iface(MAC, "127.0.0.1"), "eth0": _iface(MAC, "fe80::1", "2001:db8::5", "10.0.0.9")}
    assert pick_address(interfaces, [MAC], 8443) == "10.0.0.9:8443"
    assert pick_address({"eth0": _iface(MAC, "2001:db8::5")}, [MAC], 443) == "[2001:db8::5]:443"


def test_garbage_from_libvirt_gives_no_address() -> None:
    """Malformed entries are skipped rather than raising."""
    assert pick_address({"x": "nonsense", "y": {"hwaddr": MAC, "addrs": [{"addr": "not-ip"}, 5]}}, [MAC], 1) is None


def test_static_pool_parses_and_defaults_the_port() -> None:
    """Pool entries accept ip, ip:port and [ipv6]:port; the backend port fills in."""
    pool = parse_static_pool(" 127.0.0.1, 127.0.0.2:8443 ,[::1]:9000,::2", 443)
    assert pool == ("127.0.0.1:443", "127.0.0.2:8443", "[::1]:9000", "[::2]:443")


BAD_POOLS = ["example.com", "1.2.3.4:http", "1.2.3.4:70000", "1.2.3.4,1.2.3.4", "[::1]:x", "[::1]x"]


@pytest.mark.parametrize("bad", BAD_POOLS)
def test_bad_static_pool_entries_are_refused(bad: str) -> None:
    """Names, bad ports and duplicates are ValueErrors (a settings error at start)."""
    with pytest.raises(ValueError):
        parse_static_pool(bad, 443)


def test_free_static_skips_used_addresses() -> None:
    """The first address no live VM holds is handed out; None when all are used."""
    pool = ("10.0.0.1:443", "10.0.0.2:443")
    assert free_static(pool, ["10.0.0.1:443", None]) == "10.0.0.2:443"
    assert free_static(pool, pool) is None


def test_network_leases_are_read_like_interface_addresses() -> None:
    """A network's DHCP leases go through the same MAC-checked picker; incomplete leases are skipped."""
    leases = [{"mac": "52:54:00:ff:ff:ff", "ipaddr": "10.0.0.7"}, {"mac": MAC, "ipaddr": "10.0.0.8", "prefix": 24},
              {"mac": MAC}, "junk"]
    assert pick_address(leases_as_interfaces(leases), [MAC], 443) == "10.0.0.8:443"  # type: ignore[arg-type]
