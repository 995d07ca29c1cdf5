"""Reading the kernel's counts back: conntrack entries and nft counters per member VM of the l4 plan.

Pure parsing of the tools' output (`conntrack -L`, `nft -j list counters`); the glue runs them.
A flow is counted for the VM in its reply direction, which is where conntrack sent it, so the
counts stay right for a VM that has left the map and drains.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from services.balancer.core.passthrough import DROPS_COUNTER, Plan, TableSpec, VmFlows, counter_name

_CONNTRACK_REPLY = re.compile(r"src=(\S+) dst=\S+ sport=\d+ dport=\d+ .*?src=(\S+) dst=\S+ sport=(\d+)")


_REMAINING = re.compile(r"^\S+\s+\d+\s+(\d+)\s")
"""`udp      17 587 src=…`: the third field is the seconds the entry has left."""


def count_flows(conntrack_lines: str, plan: Plan, spec: TableSpec | None = None) -> dict[str, int]:
    """Open flows per member VM, from `conntrack -L` lines (the reply's source names the VM).

    With `spec`, an entry counts only while it is live (`live`); without, every entry counts."""
    by_endpoint = {(m.address, m.port): m.vm for m in plan.members}
    counts = {m.vm: 0 for m in plan.members}
    for line in conntrack_lines.splitlines():
        found = _CONNTRACK_REPLY.search(line)
        vm = by_endpoint.get((found.group(2), int(found.group(3)))) if found else None
        if vm is not None and (spec is None or live(line, spec)):
            counts[vm] += 1
    return counts


def live(line: str, spec: TableSpec) -> bool:
    """A packet passed within `spec.live_within_s`: an entry the VM never answered yet counts too (it is young)."""
    left = _REMAINING.match(line)
    if left is None or "[UNREPLIED]" in line:
        return True
    return int(left.group(1)) >= spec.conntrack_timeout_s - spec.live_within_s


def read_counters(listing: Mapping[str, Any], plan: Plan) -> dict[str, tuple[int, int]]:
    """(packets, bytes) per member VM from `nft -j list counters table ...`."""
    by_name = {counter_name(slot): vm for vm, slot in plan.slots.items()}
    found: dict[str, tuple[int, int]] = {}
    for item in listing.get("nftables", []):
        counter = item.get("counter") if isinstance(item, Mapping) else None
        if counter and counter.get("name") in by_name:
            found[by_name[counter["name"]]] = (int(counter.get("packets", 0)), int(counter.get("bytes", 0)))
    return found


def read_drops(listing: Mapping[str, Any]) -> int:
    """Packets dropped so far for leaving a VM un-NATed, from `nft -j list counters table ...`."""
    for item in listing.get("nftables", []):
        counter = item.get("counter") if isinstance(item, Mapping) else None
        if counter and counter.get("name") == DROPS_COUNTER:
            return int(counter.get("packets", 0))
    return 0


def vm_flows(plan: Plan, entries: Mapping[str, int], counters: Mapping[str, tuple[int, int]]) -> dict[str, VmFlows]:
    """Each member's flows: conntrack entries with its counters' packets and bytes."""
    return {m.vm: VmFlows(entries.get(m.vm, 0), *counters.get(m.vm, (0, 0))) for m in plan.members}
