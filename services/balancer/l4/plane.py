"""The l4 loop: every `balancer_l4_sync_interval_s` the kernel's map follows the router's table.

One sync writes the VMs that may take new flows (`core.l4plane.targets`) to the kernel through
`Passthrough.apply` (a no-op when nothing changed), tells connection-ID learning the VMs' slots,
then reads every VM's flows. The reading feeds the drains (`FlowBook.busy`, the router's drain
book asks it), the load report and `/metrics`. Draining VMs are simply left out of the map:
conntrack keeps their established flows where they are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

import structlog

from services.balancer.core.backends import Backend
from services.balancer.core.l4plane import FlowBook, FlowFigures, targets
from services.balancer.proxy.router import Router
from shared.throttle import LineThrottle

log = structlog.get_logger("balancer.l4")


class PassthroughPort(Protocol):
    """The kernel side (`l4.nft.Passthrough`): one nftables table, its per-VM counters and conntrack."""

    async def start(self) -> None: ...

    async def apply(self, targets: Sequence[Any], known: Collection[str] | None = None) -> bool: ...

    async def flows(self) -> Mapping[str, FlowFigures]: ...

    async def close(self) -> None: ...


class CidPort(Protocol):
    """Connection-ID learning (`l4.cid.CidSteering`): which slot each VM address has, and teardown."""

    def set_slots(self, mapping: Mapping[str, int]) -> None: ...

    def learned(self) -> int: ...

    def detach(self) -> None: ...


Learning = Callable[[], Awaitable[tuple[CidPort | None, str]]]
"""Attaches connection-ID learning: the attached steering, or None and why not."""


class L4Plane:
    """Keeps the kernel's map, the flow readings and connection-ID learning in step with the router."""

    def __init__(
        self, router: Router, passthrough: PassthroughPort, target_of: Callable[[Backend], Any], interval_s: float,
        book: FlowBook, learning: Learning | None = None, slots: Callable[[], Mapping[str, int]] | None = None,
        read_every_s: float = 1.0,
    ) -> None:
        """`target_of` makes the kernel's target of a backend; `learning` attaches connection-ID learning at
        start (or says why not); `slots` (VM id -> slot, the kernel's plan) is handed to it after each write.
        `read_every_s`: how often flows are read when no VM drains (each reading runs `conntrack` and `nft`:
        at every 0.2 s sync that was 3-4% of an idle host core)."""
        self.router = router
        self.passthrough = passthrough
        self.target_of = target_of
        self.interval_s = interval_s
        self.book = book
        self.learning = learning
        self.cid: CidPort | None = None
        self.cid_note = "off: no learning configured"
        """Whether connection-ID learning runs, in words (logged at start)."""
        self.slots = slots
        self._slots_given: dict[str, int] | None = None
        self.mapped: tuple[str, ...] | None = None
        """The VMs the kernel sends new flows to now (None: not written yet)."""
        self.read_every_s = read_every_s
        self._next_read = 0.0
        self.failures = 0
        """Syncs that failed (nft or conntrack); the map and readings stay as they were until the next one."""
        self._lines = LineThrottle()
        self._lock = asyncio.Lock()
        self._closed = False

    async def start(self) -> None:
        """Set the kernel up (a stale table from a crash is replaced) with no VM yet; attach learning."""
        await self.passthrough.start()
        if self.learning is not None:
            self.cid, self.cid_note = await self.learning()

    async def run(self) -> None:
        """Sync until closed; a failed sync is logged and retried at the next tick."""
        while not self._closed:
            try:
                await self.sync()
            except Exception as error:  # noqa: BLE001 - the loop must outlive one bad nft or conntrack call
                self.failures += 1
                left_out = self._lines.admit("sync", self.router.loop.time())  # 5 a second would flood the log
                if left_out is not None:
                    log.warning("l4.sync_failed", error=str(error) or type(error).__name__, left_out=left_out)
            await asyncio.sleep(self.interval_s)

    async def sync(self) -> None:
        """Write the map, hand the slots to learning, read the flows, then let drains that are over end."""
        async with self._lock:
            if self._closed:
                return
            await self._write(targets(self.router.table, self.router.loop.time()))
            read_at = self.router.loop.time()
            if read_at >= self._next_read or self._draining():
                self.book.read(await self.passthrough.flows(), read_at)
                self._next_read = read_at + self.read_every_s
            self.book.forget(self.router.table.backends)
        self.router.check_drains()

    def _draining(self) -> bool:
        """A drain waits on the next reading: while one runs, flows are read at every sync."""
        return any(b.draining for b in self.router.table.backends.values())

    async def _write(self, chosen: list[Backend]) -> None:
        changed = await self.passthrough.apply([self.target_of(b) for b in chosen], self.router.table.backends.keys())
        mapped = tuple(b.vm for b in chosen)
        self.book.applied(mapped, self.router.table.backends, self.router.loop.time())
        if mapped != self.mapped:
            log.info("l4.map_changed", vms=list(mapped), written=changed)
            self.mapped = mapped
        if self.cid is not None and self.slots is not None:
            addresses = self._addresses(self.slots())
            if addresses != self._slots_given:  # each hand-over reads the learned CIDs back: not every tick
                self.cid.set_slots(addresses)
                self._slots_given = addresses

    def _addresses(self, slots: Mapping[str, int]) -> dict[str, int]:
        """VM id -> slot as learning wants it: VM address -> slot."""
        table = self.router.table
        return {b.host: slots[vm] for vm, b in ((vm, table.get(vm)) for vm in slots) if b is not None}

    @property
    def flows(self) -> Mapping[str, FlowFigures]:
        """The latest flows per VM (read at scrape and report time)."""
        return self.book.flows

    async def close(self) -> None:
        """Stop syncing, then remove the table and the learning's filters and pinned maps."""
        async with self._lock:
            self._closed = True
        try:
            await self.passthrough.close()
        finally:
            if self.cid is not None:
                self.cid.detach()
