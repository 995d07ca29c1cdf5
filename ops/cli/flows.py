"""The CLI commands that talk to the fleet, as async functions returning what to show.

Each takes a connected `Bus` and returns data (or yields lines), so the same code serves the
rich view, `--json` and the tests; `ops.cli.app` only parses arguments and prints.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from pydantic import BaseModel

from ops.cli.client import EXIT_ERROR, EXIT_UNREACHABLE, AnyResult, CliError, ask, lost
from ops.cli.progress import FleetTracker, Verdict
from shared.bus import Bus, decode
from shared.contract.commands import DrainVm, GetStatus, ScaleFleet
from shared.contract.events import ScalingDecided, VmStateChanged
from shared.contract.load import FleetLoaded
from shared.contract.policy import PolicyPatchBase, ScalingPolicy
from shared.contract.status import DesiredState, FleetStatus
from shared.errors import BusError

CLOSED_CHECK_S = 1.0
"""How often a quiet `watch` checks that its NATS connection is still there."""
POLL_S = 2.0
"""How often `scale` re-reads the status while it waits (events alone could be missed)."""


async def status(bus: Bus, timeout: float) -> FleetStatus:
    return await ask(bus, bus.subjects.cmd_status, GetStatus(), FleetStatus, timeout)


async def drain(bus: Bus, vm: str, timeout: float) -> AnyResult:
    return await ask(bus, bus.subjects.cmd_drain, DrainVm(vm=vm), AnyResult, timeout)


async def set_policy(bus: Bus, patch: PolicyPatchBase, timeout: float) -> ScalingPolicy:
    return await ask(bus, bus.subjects.cmd_policy, patch, ScalingPolicy, timeout)


async def ask_scale(bus: Bus, replicas: int, timeout: float) -> DesiredState:
    return await ask(bus, bus.subjects.cmd_scale, ScaleFleet(replicas=replicas), DesiredState, timeout)


async def scale(
    bus: Bus,
    replicas: int,
    timeout: float,
    wait_s: float,
    on_change: Callable[[FleetTracker], None],
    max_failures: int = 3,
) -> tuple[DesiredState, FleetTracker]:
    """Ask for `replicas` VMs, then follow `fleet.vm.*` and status until the fleet is there or fails."""
    tracker = FleetTracker(target=replicas, max_failures=max_failures)
    changed = asyncio.Event()

    async def on_event(event: VmStateChanged, _msg: Msg) -> None:
        tracker.apply(event)
        changed.set()

    sub = await bus.subscribe(bus.subjects.vm_all, VmStateChanged, on_event)
    try:
        desired = await ask_scale(bus, replicas, timeout)
        await _follow(bus, tracker, changed, timeout, wait_s, on_change)
    finally:
        with contextlib.suppress(NatsError):
            await sub.unsubscribe()
    return desired, tracker


async def _follow(
    bus: Bus, tracker: FleetTracker, changed: asyncio.Event, timeout: float, wait_s: float,
    on_change: Callable[[FleetTracker], None],
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    next_poll = loop.time()
    while True:
        if loop.time() >= next_poll:
            await _poll(bus, tracker, timeout)
            next_poll = loop.time() + POLL_S
        on_change(tracker)
        if _finished(tracker, deadline - loop.time(), wait_s):
            return
        changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.05, min(deadline, next_poll) - loop.time())):
                await changed.wait()


def _finished(tracker: FleetTracker, remaining: float, wait_s: float) -> bool:
    """True once the fleet is there; CliError when it failed or time is up; False to keep waiting."""
    verdict = tracker.verdict()
    if verdict is Verdict.FAILED:
        raise CliError(f"scaling failed: {'; '.join(tracker.failures[-3:])}", EXIT_ERROR)
    if verdict is Verdict.REACHED:
        return True
    if remaining <= 0:
        raise CliError(f"the fleet did not reach {tracker.target} ready VMs within {wait_s:g} s: "
                       f"{tracker.summary()}", EXIT_ERROR)
    return False


async def _poll(bus: Bus, tracker: FleetTracker, timeout: float) -> None:
    """Merge a fresh status; a slow or missing answer is not fatal while events still arrive."""
    try:
        tracker.merge(await bus.request(bus.subjects.cmd_status, GetStatus(), FleetStatus, timeout=timeout))
    except BusError:
        return
    except NatsError as error:
        raise lost(error) from None


WatchItem = tuple[str, BaseModel]


async def watch(bus: Bus, include_load: bool = True) -> AsyncGenerator[WatchItem, None]:
    """Yield (subject, event) for `fleet.vm.*`, `fleet.scaler.decision` and (optionally) `fleet.load`."""
    s = bus.subjects
    models: dict[str, type[BaseModel]] = {s.vm_all: VmStateChanged, s.scaler_decision: ScalingDecided}
    if include_load:
        models[s.load] = FleetLoaded
    queue: asyncio.Queue[WatchItem] = asyncio.Queue(maxsize=10_000)
    subs = [await bus.nc.subscribe(subject, cb=_enqueue(queue, model)) for subject, model in models.items()]
    try:
        while True:
            try:
                async with asyncio.timeout(CLOSED_CHECK_S):
                    item = await queue.get()
            except TimeoutError:
                if bus.nc.is_closed:
                    raise CliError("lost the connection to NATS", EXIT_UNREACHABLE) from None
                continue
            yield item
    finally:
        for sub in subs:
            with contextlib.suppress(NatsError):
                await sub.unsubscribe()


def _enqueue(queue: asyncio.Queue[WatchItem], model: type[BaseModel]) -> Callable[[Msg], Awaitable[None]]:
    async def on_message(msg: Msg) -> None:
        try:
            event = decode(model, msg.data)
        except BusError as error:
            event = AnyResult(subject=msg.subject, malformed=error.message)
        if not queue.full():
            queue.put_nowait((msg.subject, event))

    return on_message
