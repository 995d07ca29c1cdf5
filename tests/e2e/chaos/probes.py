"""What a fault scenario watches while it runs: the leader lease's KV writes and the time the
services take to come back after NATS does."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from datetime import UTC, datetime

from nats.errors import Error as NatsError

from shared.bus import Bus
from shared.contract.commands import GetStatus
from shared.contract.events import VmState
from shared.contract.status import FleetStatus
from shared.errors import BusError
from tests.e2e.chaos.stack import PROCESSES, ChaosStack
from tests.support import wait_until

BUCKET = "quicfleet_scaler"
LEASE_KEY = "leader"


class LeaseWrites:
    """Polls the lease key and keeps the monotonic time of every revision change (a KV write that
    succeeded: the leader renews every lease_ttl_s / 4)."""

    def __init__(self, bus: Bus, interval_s: float = 0.2) -> None:
        self.bus, self.interval_s = bus, interval_s
        self.writes: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LeaseWrites:
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _poll(self) -> None:
        last = 0
        while True:
            with contextlib.suppress(NatsError, TimeoutError, OSError):
                kv = await self.bus.nc.jetstream(timeout=1).key_value(BUCKET)
                entry = await kv.get(LEASE_KEY)
                if entry.revision is not None and entry.revision != last:
                    last = entry.revision
                    self.writes.append(time.monotonic())
            await asyncio.sleep(self.interval_s)

    def first_after(self, at: float) -> float | None:
        """Seconds from `at` to the first write seen after it, None when none came."""
        return next((w - at for w in self.writes if w > at), None)

    def longest_gap(self, start: float, end: float) -> float:
        """The longest time between `start`, the writes inside [start, end], and `end`."""
        marks = [start, *(w for w in self.writes if start < w < end), end]
        return max(b - a for a, b in itertools.pairwise(marks))


async def all_connected(stack: ChaosStack, timeout: float = 30.0) -> float:
    """Wait until every process is connected to NATS again; returns how long that took."""
    start = time.monotonic()
    want = set(PROCESSES)
    try:
        await wait_until(lambda: stack.connected() >= want, timeout, 0.1, "every service connected to NATS")
    except AssertionError as error:
        raise AssertionError(f"{error}: missing {sorted(want - stack.connected())}") from None
    return time.monotonic() - start


async def resynced(bus: Bus, ready: int, since: datetime, timeout: float = 30.0) -> float:
    """Wait until the scaler answers status with `ready` ready VMs and a balancer reported after
    `since`; returns how long that took."""
    start = time.monotonic()

    async def fresh() -> bool:
        try:
            status = await bus.request(bus.subjects.cmd_status, GetStatus(), FleetStatus, timeout=2)
        except (BusError, NatsError, TimeoutError):
            return False
        serving = sum(1 for vm in status.vms if vm.state is VmState.READY)
        return serving == ready and any(b.last_seen > since for b in status.balancers)

    await wait_until(fresh, timeout, 0.2, f"status with {ready} ready VMs and a fresh balancer report")
    return time.monotonic() - start


def utc_now() -> datetime:
    return datetime.now(UTC)
