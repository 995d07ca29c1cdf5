"""The l4 mode's hands on the kernel: one nftables table written through `nft -j -f -`, atomically.

Each change is one `nft` transaction (the plan's whole batch), so a packet sees the old map or the
new one, never half of each. `nft` runs in the programmed namespace (`ip netns exec`) when one is
set (tests, the lab). The table is removed on close and replaced at start, so a crashed run's
leftovers never steer traffic.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import structlog

from services.balancer.core.passthrough import (
    L4Target,
    Plan,
    TableSpec,
    VmFlows,
    create_batch,
    make_plan,
    reset_batch,
    ruleset,
    timeout_command,
)
from services.balancer.core.passthrough_reading import read_counters, read_drops, vm_flows
from services.balancer.l4.conntrack import conntrack_lines, expire_entries
from services.balancer.l4.tool import ToolError, run_tool

log = structlog.get_logger("balancer.l4")

NftError = ToolError
"""An `nft` command failed (the message holds its stderr)."""


class Passthrough:
    """The table of one service (VIP:port): `start`, `apply` targets, read `flows`, `close`."""

    def __init__(self, spec: TableSpec, netns: str | None = None, nft: str = "nft") -> None:
        self.spec = spec
        self.netns = netns
        self.nft = nft
        self.plan = Plan()
        self._idle: set[str] = set()
        """Members out of the map that the last `flows()` found with no flow left: the next apply drops them."""

    def slots(self) -> Mapping[str, int]:
        """VM id -> CID slot of every member (for connection-ID learning)."""
        return dict(self.plan.slots)

    async def _batch(self, batch: Mapping[str, Any]) -> None:
        await run_tool([self.nft, "-j", "-f", "-"], self.netns, json.dumps(batch))

    async def start(self) -> None:
        """A fresh table (a stale one replaced), its ct timeout object, and no VM yet."""
        await self._batch(create_batch(self.spec))
        await run_tool([self.nft, "-f", "-"], self.netns, timeout_command(self.spec))
        self.plan = Plan()
        await self._batch(ruleset(self.spec, self.plan))
        log.info("l4.table_created", table=self.spec.table, vip=self.spec.vip, port=self.spec.port,
                 netns=self.netns, conntrack_timeout_s=self.spec.conntrack_timeout_s)

    async def apply(self, targets: Sequence[L4Target], known: Collection[str] | None = None) -> bool:
        """New flows go to `targets` from now on (one transaction); False when nothing changed.

        A VM left out keeps its established flows (conntrack) and stays a member (slot, counters, flows)
        until a `flows()` reading finds none left. A member not in `known` (the VMs that still exist,
        when given) is dropped at once and its entries expired: its flows have nothing to reach, and
        their packets are re-hashed to a live VM (which may answer with a stateless reset) instead of silence.
        """
        members = {m.vm for m in self.plan.members}
        gone = members - set(known) if known is not None else set()
        for vm in sorted(gone):
            await self._expire(vm)
        keep = members - self._idle - gone
        plan = make_plan(self.plan, targets, self.spec.buckets, keep=keep)
        if plan == self.plan:
            return False
        await self._batch(ruleset(self.spec, plan, self.plan))
        self.plan = plan
        return True

    async def flows(self) -> dict[str, VmFlows]:
        """Every member VM's live conntrack entries and counted packets/bytes (key: VM id).

        A member out of the map found with no live flow has its leftover entries expired here, before the
        drain that waits on this reading can end (`l4.conntrack`), and leaves the plan at the next apply.
        """
        plan = self.plan
        entries = await conntrack_lines(self.spec, plan, self.netns)
        found = vm_flows(plan, entries, read_counters(await self._counters(), plan))
        mapped = set(plan.buckets)
        idle = {vm for vm, seen in found.items() if seen.entries == 0 and vm not in mapped}
        for vm in sorted(idle - self._idle):
            await self._expire(vm)
        self._idle = idle
        return found

    async def _expire(self, vm: str) -> None:
        """A member out of the map with no live flow: its leftover entries must not steer a reused client port."""
        member = self.plan.member(vm)
        if member is not None:
            await expire_entries(self.spec, member, self.netns)
            log.info("l4.entries_expired", vm=vm, address=member.address)

    async def _counters(self) -> dict[str, Any]:
        listing: dict[str, Any] = json.loads(await run_tool(
            [self.nft, "-j", "list", "counters", "table", "inet", self.spec.table], self.netns
        ) or "{}")
        return listing

    async def dropped(self) -> int:
        """VM packets dropped so far for leaving un-NATed (e.g. a server probing a client's old path)."""
        return read_drops(await self._counters())

    async def close(self) -> None:
        """Remove the table (fine when it is already gone)."""
        await self._batch(reset_batch(self.spec))
        self.plan = Plan()
        self._idle = set()
        log.info("l4.table_removed", table=self.spec.table, netns=self.netns)
