"""The lab's client side, for the `l4` balancer: a client namespace wired to the lab, a VIP, and a guard.

An `l4` balancer programs the kernel's prerouting DNAT: clients must arrive through an interface
(a packet a namespace sends itself never passes prerouting), so the lab gets a client namespace
`<lab>-c` on a veth pair (`qfedge` at both ends):

| namespace  | address on `qfedge`          | route                    |
|------------|------------------------------|--------------------------|
| `<lab>`    | 10.75.0.1/24, VIP 10.75.0.10 | (its guests' bridge)     |
| `<lab>-c`  | 10.75.0.2/24                 | default via 10.75.0.1    |

The guests' network must let a DNAT'ed first packet in: libvirt's `nat` and isolated networks
reject every new forwarded flow into the bridge from their own iptables chains, and an `accept`
in another table never overrides a `reject` (each base chain on a hook must let a packet pass).
So an edge lab's network is `<forward mode='open'/>` (libvirt adds no rule; guests get the
bridge as their gateway, so their answers go back through the host's conntrack), and this module
adds the one rule libvirt no longer does: from the client side, only DNAT'ed flows (the
balancer's) reach the guests; whatever else the client side sends toward them is dropped, and
nothing the guests send leaves toward the client side un-NATed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ops.lab import netns

DEVICE = "qfedge"
EDGE_NET = "10.75.0"
TABLE = "quicfleet_lab_edge"


@dataclass(frozen=True)
class Edge:
    """Where the lab's clients are: their namespace, addresses and the VIP the balancer serves."""

    lab: str
    bridge: str = "qfbr0"
    host_ip = f"{EDGE_NET}.1"
    client_ip = f"{EDGE_NET}.2"
    vip = f"{EDGE_NET}.10"

    @property
    def namespace(self) -> str:
        return client_namespace(self.lab)


def client_namespace(lab: str) -> str:
    """The client namespace of lab `lab`."""
    return f"{lab}-c"


def guard_rules(edge: Edge) -> str:
    """The guard table in nft's syntax (one transaction: the table is deleted and written again).

    Priority `filter + 10`: after a balancer's own forward chain (priority `filter`), which may drop
    a VM's stray un-NATed answer first; either way a drop is final.
    """
    inside, outside = f'"{edge.bridge}"', f'"{DEVICE}"'
    return (
        f"table inet {TABLE}\ndelete table inet {TABLE}\n"
        f"table inet {TABLE} {{\n"
        "\tchain forward {\n\t\ttype filter hook forward priority filter + 10; policy accept;\n"
        f"\t\tiifname {outside} oifname {inside} ct status dnat accept\n"
        f"\t\tiifname {outside} oifname {inside} counter drop\n"
        f"\t\tiifname {inside} oifname {outside} ct status dnat accept\n"
        f"\t\tiifname {inside} oifname {outside} counter drop\n"
        "\t}\n}\n"
    )


def connect(lab: str, bridge: str = "qfbr0") -> Edge:
    """Create the client namespace and the wire, address both ends and the VIP, route, and guard the guests.

    A client namespace left by a lab of the same name that died is removed first (the lab's own
    namespace was free, so nobody uses it).
    """
    edge = Edge(lab, bridge)
    remove(lab)
    netns.create(edge.namespace)
    netns.run(["ip", "-n", lab, "link", "add", DEVICE, "type", "veth", "peer", "name", DEVICE,
               "netns", edge.namespace])
    for ns, address in ((lab, edge.host_ip), (edge.namespace, edge.client_ip)):
        netns.run(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", DEVICE])
        netns.run(["ip", "-n", ns, "link", "set", DEVICE, "up"])
    netns.run(["ip", "-n", lab, "addr", "add", f"{edge.vip}/32", "dev", DEVICE])
    netns.run(["ip", "-n", edge.namespace, "route", "add", "default", "via", edge.host_ip])
    netns.run(["ip", "netns", "exec", lab, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
    guard(edge)
    return edge


def guard(edge: Edge) -> None:
    """Write the guard table into the lab's namespace (again: it replaces itself)."""
    done = netns.run(["ip", "netns", "exec", edge.lab, "nft", "-f", "-"], check=False,
                     stdin=guard_rules(edge))
    if done.returncode != 0:
        raise netns.LabError(f"the lab's edge guard did not load: {done.stderr.strip()[:400]}")


def remove(lab: str) -> None:
    """Delete the wire, then the client namespace (the guard table goes with the lab's namespace).

    The lab's end of the wire is deleted first by name: a namespace's veth ends go only when the kernel's
    deferred namespace cleanup runs, so right after `ip netns del` the lab's end may still be there."""
    if netns.exists(lab):
        netns.run(["ip", "-n", lab, "link", "del", DEVICE], check=False)
    netns.delete(client_namespace(lab))


SPREAD_NET = "10.75"
"""The spread's wires: 10.75.<i>.0/24 to host i (host .1, client .2)."""
SPREAD_VIP = "10.75.255.10"
"""The anycast VIP of a spread: on every host's side of its wire."""
SPREAD_CLIENT = "10.75.254.2"
"""The client namespace's own address (on its loopback), which every host routes back over its own wire."""


@dataclass(frozen=True)
class Spread:
    """One client namespace in front of several hosts (labs), each reached over its own wire, all announcing the
    same VIP: the client's kernel spreads flows over the hosts by ECMP on the 5-tuple, as an upstream router with
    an anycast VIP would. Each host's `l4` balancer then serves its own VMs (docs/operations.md, two hosts)."""

    labs: tuple[str, ...]
    namespace: str
    vip: str = SPREAD_VIP
    client_ip: str = SPREAD_CLIENT

    @staticmethod
    def wire(index: int) -> tuple[str, str]:
        """(the host's, the client's) address on the wire to host `index`."""
        return f"{SPREAD_NET}.{index}.1", f"{SPREAD_NET}.{index}.2"


def connect_spread(labs: list[str], namespace: str, bridge: str = "qfbr0") -> Spread:
    """The client namespace, a wire to each host (`qfedge` there, `qfe<i>` here), the VIP on each host, the
    client's multipath route to it (L4 hash), each host's route back, and each host's guard."""
    spread = Spread(tuple(labs), namespace)
    netns.delete(namespace)
    netns.create(namespace)
    netns.run(["ip", "-n", namespace, "addr", "add", f"{spread.client_ip}/32", "dev", "lo"])
    hops: list[str] = []
    for index, lab in enumerate(labs):
        host_ip, client_ip = Spread.wire(index)
        local = f"qfe{index}"
        netns.run(["ip", "-n", lab, "link", "add", DEVICE, "type", "veth", "peer", "name", local, "netns", namespace])
        for ns, dev, address in ((lab, DEVICE, host_ip), (namespace, local, client_ip)):
            netns.run(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", dev])
            netns.run(["ip", "-n", ns, "link", "set", dev, "up"])
        netns.run(["ip", "-n", lab, "addr", "add", f"{spread.vip}/32", "dev", DEVICE])
        netns.run(["ip", "-n", lab, "route", "replace", f"{spread.client_ip}/32", "via", client_ip, "dev", DEVICE])
        netns.run(["ip", "netns", "exec", lab, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        guard(Edge(lab, bridge))
        hops += ["nexthop", "via", host_ip, "dev", local]
    netns.run(["ip", "netns", "exec", namespace, "sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1"])
    netns.run(["ip", "-n", namespace, "route", "add", f"{spread.vip}/32", "src", spread.client_ip, *hops])
    return spread
