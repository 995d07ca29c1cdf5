"""The l4 mode's plan: which VM each hash bucket and each CID slot sends new flows to, as one nftables batch.

The host's kernel does the forwarding: a new UDP flow to the VIP gets a bucket from a hash of the
client's address and port, the bucket's VM is the DNAT target, and conntrack keeps every later
packet of the flow (both ways) on that VM. So changing the map never moves an established flow;
it only decides where new ones go. A VM that leaves the targets (draining, unhealthy) stays a
*member* (counted, its stray replies dropped, its CID slot kept) while it still has flows.

Marks are the contract with the connection-ID learning program (tc BPF): it sets `meta mark` to a
VM's slot (1..65535) on a packet whose DCID it learned; the nat chain sends such a new flow to
that slot's VM, and otherwise sets the mark to BUCKET_BASE + hash bucket and sends it to that
bucket's VM. nft 1.0.6 refuses `jhash ... map @named`, hence the mark in between; and its JSON
parser cannot write maps with concatenated data (address . port), hence one map for addresses and
one for ports, written in the same transaction.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

BUCKET_BASE = 0x10000
"""Marks of hash buckets start here, above the CID slots (1..65535) the BPF program sets."""
MAX_SLOT = 0xFFFF
DROPS_COUNTER = "unnated_drops"
"""Counts VM packets dropped for leaving un-NATed (a server probing an old client path, a stray reply)."""


@dataclass(frozen=True)
class L4Target:
    """A VM that the kernel may send flows to: its id, address and UDP port."""

    vm: str
    address: str
    port: int


@dataclass(frozen=True)
class TableSpec:
    """The service the table serves and how; fixed for the life of a balancer."""

    vip: str
    port: int
    table: str = "quicfleet_l4"
    buckets: int = 256
    conntrack_timeout_s: int = 600
    """Longer than the VMs' QUIC idle timeout, or conntrack forgets a live flow and re-hashes it."""
    vm_network: str | None = None
    """The VMs' subnet: when set, no UDP from it on a member's port leaves un-NATed (not only members')."""
    live_within_s: int = 30
    """A flow counts as open (for drains, reports, the scaler's `flows`) while a packet passed this recently.

    UDP has no close the kernel sees: an entry outlives the QUIC connection by up to `conntrack_timeout_s`,
    so counting every entry would hold each drain to its deadline. Conntrack shows how long an entry has
    left; a replied one has `conntrack_timeout_s` minus the seconds since its last packet."""
    seed: int = 0x5F17
    """The jhash seed: fixed, so a restarted balancer hashes a client to the same bucket."""

    @property
    def ip(self) -> str:
        """The nft payload protocol of the VIP's family (`ip` or `ip6`)."""
        return "ip6" if ipaddress.ip_address(self.vip).version == 6 else "ip"

    @property
    def addr_type(self) -> str:
        return "ipv6_addr" if self.ip == "ip6" else "ipv4_addr"

    @property
    def timeout_name(self) -> str:
        return "quic_udp"


@dataclass(frozen=True)
class Plan:
    """What the table holds: each bucket's VM id, the member VMs and their stable CID slots."""

    buckets: tuple[str, ...] = ()
    members: tuple[L4Target, ...] = ()
    slots: Mapping[str, int] = field(default_factory=dict)
    last_slot: int = 0
    """The highest slot ever given: new VMs get the next one, so a slot is not reused at once."""

    def member(self, vm: str) -> L4Target | None:
        return next((m for m in self.members if m.vm == vm), None)


@dataclass(frozen=True)
class VmFlows:
    """One VM's flows as the kernel counts them: conntrack entries, and packets/bytes both ways."""

    entries: int = 0
    packets: int = 0
    bytes: int = 0


def plan_buckets(previous: tuple[str, ...] | None, targets: Sequence[str], count: int) -> tuple[str, ...]:
    """Each bucket's target; a bucket keeps its target unless that left or holds more than its share.

    Every target gets count // n buckets (the first count % n, by buckets already held, one more), so
    adding a target moves only the buckets it takes, and removing one moves only the buckets it had.
    """
    names = sorted(set(targets))
    if not names or count <= 0:
        return ()
    old = previous if previous is not None and len(previous) == count else ("",) * count
    quota = _quotas(names, old, count)
    table = [owner if owner in quota else "" for owner in old]
    held = {name: 0 for name in names}
    for index, owner in enumerate(table):
        if owner and held[owner] >= quota[owner]:
            table[index] = ""
        elif owner:
            held[owner] += 1
    wanting = iter([name for name in names for _ in range(quota[name] - held[name])])
    return tuple(owner or next(wanting) for owner in table)


def _quotas(names: list[str], old: Sequence[str], count: int) -> dict[str, int]:
    """count // n each; the remainder goes to the targets holding most buckets now (then by name)."""
    share, extra = divmod(count, len(names))
    ranked = sorted(names, key=lambda name: (-old.count(name), name))
    return {name: share + (1 if rank < extra else 0) for rank, name in enumerate(ranked)}


def plan_slots(previous: Mapping[str, int], last_slot: int, vms: Iterable[str]) -> tuple[dict[str, int], int]:
    """Slots of `vms`: a VM keeps its slot; a new one gets the next unused after `last_slot` (wrapping)."""
    wanted = sorted(set(vms))
    slots = {vm: previous[vm] for vm in wanted if vm in previous}
    used = set(slots.values())
    for vm in (vm for vm in wanted if vm not in slots):
        last_slot = _next_free(last_slot, used)
        slots[vm] = last_slot
        used.add(last_slot)
    return slots, last_slot


def _next_free(after: int, used: set[int]) -> int:
    for step in range(1, MAX_SLOT + 1):
        candidate = (after + step - 1) % MAX_SLOT + 1
        if candidate not in used:
            return candidate
    raise ValueError("no free CID slot (65535 VMs)")


def make_plan(previous: Plan | None, targets: Sequence[L4Target], count: int, keep: Iterable[str] = ()) -> Plan:
    """The next plan: buckets over `targets`; members are the targets plus previous members in `keep`
    (VMs out of the map that still have flows)."""
    before = previous or Plan()
    chosen = {t.vm: t for t in targets}
    kept = {m.vm: m for m in before.members if m.vm in set(keep) and m.vm not in chosen}
    members = tuple(sorted({**kept, **chosen}.values(), key=lambda m: m.vm))
    slots, last = plan_slots(before.slots, before.last_slot, (m.vm for m in members))
    buckets = plan_buckets(before.buckets or None, list(chosen), count)
    return Plan(buckets, members, slots, last)


def counter_name(slot: int) -> str:
    """The named nft counter of the VM with this slot."""
    return f"vm_{slot}"


def timeout_command(spec: TableSpec) -> str:
    """The ct timeout object in nft's text syntax: nft 1.0.6's JSON parser drops its policy and l3proto."""
    l3 = "ip6" if spec.ip == "ip6" else "ip"
    return (f"add ct timeout inet {spec.table} {spec.timeout_name} {{ protocol udp; l3proto {l3}; "
            f"policy = {{ unreplied: {min(30, spec.conntrack_timeout_s)}, replied: {spec.conntrack_timeout_s} }}; }}\n")


def reset_batch(spec: TableSpec) -> dict[str, Any]:
    """Remove the table whether or not it exists (adding an existing table is a no-op)."""
    table = {"family": "inet", "name": spec.table}
    return {"nftables": [{"add": {"table": table}}, {"delete": {"table": table}}]}


def create_batch(spec: TableSpec) -> dict[str, Any]:
    """A fresh, empty table: a stale one (a crashed run's) is deleted in the same transaction."""
    return {"nftables": [*reset_batch(spec)["nftables"], {"add": {"table": {"family": "inet", "name": spec.table}}}]}


def ruleset(spec: TableSpec, plan: Plan, previous: Plan | None = None) -> dict[str, Any]:
    """The batch that makes the table hold `plan`, as one atomic transaction.

    The table's rules and its sets' elements are flushed and written again; chains, maps and counters are added
    (a no-op when they exist, so counters keep counting); counters of VMs no longer members are
    deleted. Established flows live in conntrack, not in the table: rewriting it moves none.
    The ct timeout object must already exist (`timeout_command`).
    """
    commands: list[dict[str, Any]] = [_add("table", spec, name=spec.table), {"flush": {"table": _table(spec)}}]
    objects = _objects(spec, plan)
    commands += [_add(kind, spec, **body) for kind, body in objects]
    commands += [{"flush": {kind: {**_table_ref(spec), "name": body["name"]}}}
                 for kind, body in objects if kind in ("set", "map")]
    commands += [_add("rule", spec, chain=chain, expr=expr) for chain, expr in _rules(spec, plan)]
    commands += [{"add": {"element": {**_table_ref(spec), "name": name, "elem": elem}}}
                 for name, elem in _elements(plan) if elem]
    gone = set((previous or Plan()).slots.values()) - set(plan.slots.values())
    commands += [{"delete": {"counter": {**_table_ref(spec), "name": counter_name(slot)}}} for slot in sorted(gone)]
    return {"nftables": commands}


def _table(spec: TableSpec) -> dict[str, str]:
    return {"family": "inet", "name": spec.table}


def _table_ref(spec: TableSpec) -> dict[str, str]:
    return {"family": "inet", "table": spec.table}


def _add(kind: str, spec: TableSpec, **body: Any) -> dict[str, Any]:
    base = _table(spec) if kind == "table" else _table_ref(spec)
    return {"add": {kind: {**base, **body}}}


def _objects(spec: TableSpec, plan: Plan) -> list[tuple[str, dict[str, Any]]]:
    addr = spec.addr_type
    objects: list[tuple[str, dict[str, Any]]] = [
        ("chain", {"name": "dnat", "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}),
        ("chain", {"name": "timeouts", "type": "filter", "hook": "prerouting", "prio": 0, "policy": "accept"}),
        ("chain", {"name": "forward", "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}),
        ("map", {"name": "bucket_addr", "type": "mark", "map": addr}),
        ("map", {"name": "bucket_port", "type": "mark", "map": "inet_service"}),
        ("map", {"name": "slot_addr", "type": "mark", "map": addr}),
        ("map", {"name": "slot_port", "type": "mark", "map": "inet_service"}),
        ("set", {"name": "members", "type": [addr, "inet_service"]}),
        ("map", {"name": "vm_counters", "type": [addr, "inet_service"], "map": "counter"}),
    ]
    counters = [DROPS_COUNTER, *(counter_name(plan.slots[m.vm]) for m in plan.members)]
    objects += [("counter", {"name": name}) for name in counters]
    return objects


def _payload(protocol: str, name: str) -> dict[str, Any]:
    return {"payload": {"protocol": protocol, "field": name}}


def _match(left: Any, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _mark() -> dict[str, Any]:
    return {"meta": {"key": "mark"}}


def _dnat(spec: TableSpec, prefix: str) -> dict[str, Any]:
    return {"dnat": {"family": spec.ip, "addr": {"map": {"key": _mark(), "data": f"@{prefix}_addr"}},
                     "port": {"map": {"key": _mark(), "data": f"@{prefix}_port"}}}}


def _endpoint(spec: TableSpec, side: str) -> dict[str, Any]:
    """`ip saddr . udp sport` (side "s") or `ip daddr . udp dport` (side "d")."""
    return {"concat": [_payload(spec.ip, f"{side}addr"), _payload("udp", f"{side}port")]}


def _rules(spec: TableSpec, plan: Plan) -> list[tuple[str, list[dict[str, Any]]]]:
    to_vip = [_match(_payload(spec.ip, "daddr"), spec.vip), _match(_payload("udp", "dport"), spec.port)]
    jhash = {"jhash": {"mod": spec.buckets, "seed": spec.seed, "offset": BUCKET_BASE,
                       "expr": _endpoint(spec, "s")}}
    vip_flow = [_match({"ct": {"key": "status"}}, "dnat", "in"),
                _match({"ct": {"key": f"{spec.ip} daddr", "dir": "original"}}, spec.vip)]
    rules = [
        ("dnat", [*to_vip, _match(_mark(), {"range": [1, MAX_SLOT]}), _dnat(spec, "slot")]),
        ("dnat", [*to_vip, {"mangle": {"key": _mark(), "value": jhash}}]),
        ("dnat", [*to_vip, _dnat(spec, "bucket")]),
        ("timeouts", [_match({"ct": {"key": "state"}}, "new", "in"), *vip_flow,
                      _match(_endpoint(spec, "d"), "@members"), {"ct timeout": spec.timeout_name}]),
        ("forward", [_match(_endpoint(spec, "d"), "@members"),
                     {"counter": {"map": {"key": _endpoint(spec, "d"), "data": "@vm_counters"}}}]),
        ("forward", [_match(_endpoint(spec, "s"), "@members"),
                     {"counter": {"map": {"key": _endpoint(spec, "s"), "data": "@vm_counters"}}}]),
        ("forward", [_match(_endpoint(spec, "s"), "@members"), *_unnated_drop()]),
        ("forward", [_match(_endpoint(spec, "d"), "@members"), *vip_flow, {"accept": None}]),
    ]
    ports = sorted({m.port for m in plan.members})
    if spec.vm_network and ports:
        network = ipaddress.ip_network(spec.vm_network, strict=False)
        prefix = {"prefix": {"addr": str(network.network_address), "len": network.prefixlen}}
        rules.insert(-1, ("forward", [_match(_payload(spec.ip, "saddr"), prefix),
                                      _match(_payload("udp", "sport"), {"set": ports}), *_unnated_drop()]))
    return rules


def _unnated_drop() -> list[dict[str, Any]]:
    """`ct status ! dnat counter name ... drop`: a VM's packet with no DNAT'ed flow behind it (e.g. probing an
    old client path) would leave with the VM's private address."""
    return [_match({"ct": {"key": "status"}}, "dnat", "!"), {"counter": DROPS_COUNTER}, {"drop": None}]


def _elements(plan: Plan) -> list[tuple[str, list[Any]]]:
    by_vm = {m.vm: m for m in plan.members}
    buckets = [(BUCKET_BASE + index, by_vm[vm]) for index, vm in enumerate(plan.buckets)]
    slots = [(plan.slots[m.vm], m) for m in plan.members]
    return [
        ("bucket_addr", [[mark, m.address] for mark, m in buckets]),
        ("bucket_port", [[mark, m.port] for mark, m in buckets]),
        ("slot_addr", [[slot, m.address] for slot, m in slots]),
        ("slot_port", [[slot, m.port] for slot, m in slots]),
        ("members", [_pair(m) for m in plan.members]),
        ("vm_counters", [[_pair(m), counter_name(plan.slots[m.vm])] for m in plan.members]),
    ]


def _pair(target: L4Target) -> dict[str, Any]:
    return {"concat": [target.address, target.port]}
