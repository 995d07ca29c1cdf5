"""The wire between two lab namespaces: a veth pair with a /30, routes to each other's guest subnet.

Both ends are created inside the namespaces (`ip -n <first> link add … peer … netns <second>`),
so no interface ever exists in the machine's own namespace, and deleting either namespace
deletes the pair. IPv4 forwarding is switched on in both namespaces (a per-namespace setting):
the second forwards between the wire and its guests' bridge, and the first may do the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from ops.lab import netns

DEVICE = "qflink"
"""The veth's name at both ends (names are per namespace)."""


@dataclass(frozen=True)
class End:
    """One end of the wire: its namespace, its address on the wire, and the guest subnet behind it."""

    namespace: str
    address: str
    subnet: str

    @property
    def guests(self) -> str:
        return f"{self.subnet}.0/24"


def _ip(end: End, *args: str) -> None:
    netns.run(["ip", "-n", end.namespace, *args])


def connect(first: End, second: End) -> None:
    """Create the pair, address both ends, bring them up, route each guest subnet over it, forward."""
    _ip(first, "link", "add", DEVICE, "type", "veth", "peer", "name", DEVICE, "netns", second.namespace)
    for end in (first, second):
        _ip(end, "addr", "add", f"{end.address}/30", "dev", DEVICE)
        netns.run(["ip", "netns", "exec", end.namespace, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
    set_up(first, second)


def set_up(first: End, second: End) -> None:
    """Bring both ends up and (re)install both routes: a device taken down loses the routes through it."""
    for end in (first, second):
        _ip(end, "link", "set", DEVICE, "up")
    _ip(first, "route", "replace", second.guests, "via", second.address, "dev", DEVICE)
    _ip(second, "route", "replace", first.guests, "via", first.address, "dev", DEVICE)


def set_down(end: End) -> None:
    """Take `end` of the wire down: nothing crosses it until `set_up` (as a host whose NIC died)."""
    _ip(end, "link", "set", DEVICE, "down")


def is_up(end: End) -> bool:
    """Whether `end` is administratively up (`UP` among the flags of `ip link show`)."""
    done = netns.run(["ip", "-n", end.namespace, "-o", "link", "show", DEVICE], check=False)
    flags = done.stdout.partition("<")[2].partition(">")[0].split(",")
    return done.returncode == 0 and "UP" in flags
