"""Reliability matrix, VM-lifecycle rows on the lab: libvirtd restarted with clones in flight (F4),
the provisioner SIGKILLed at each step of a clone (F5), the scaler leader SIGKILLed halfway
through a scale-out (F7), and a scale-in drain watched request by request (F9).

Steady HTTP/3 load runs through the balancer during each; the lab holds at most 3 VMs. Each
scenario checks I1-I4 and records its row (tests/support/chaos.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import libvirt
import pytest

from ops.lab import Lab
from shared.contract.commands import GetStatus
from shared.contract.events import LIVE_STATES, VmState
from shared.contract.status import FleetStatus
from tests.e2e.chaos import invariants as inv
from tests.e2e.chaos.stack import ChaosStack
from tests.e2e.conftest import TIMINGS
from tests.e2e.fleetwatch import FleetWatch
from tests.e2e.load import LoadRun
from tests.support import wait_until
from tests.support.chaos import Row, record

pytestmark = pytest.mark.chaos

CEILING = 3
IN_FLIGHT = (VmState.REQUESTED, VmState.CLONING, VmState.BOOTING)


async def _serving(watch: FleetWatch, load: Any, size: int) -> tuple[dict[str, str], LoadRun]:
    await watch.scale(size)
    before = await watch.settle(size, resync=True)
    run = load()
    await wait_until(lambda: all(run.seen(a) for a in before.values()), 120, 0.5, "answers from every clone")
    return before, run


def _in_flight(watch: FleetWatch) -> set[str]:
    return {vm for vm, e in watch.latest.items() if e.state in IN_FLIGHT}


def _most_alive(watch: FleetWatch, since: int) -> int:
    """The most VMs live at once, replaying the events from `watch.history[since:]` over the start."""
    live = {vm for vm, e in watch.latest.items() if e.state in LIVE_STATES}
    live -= {e.vm for e in watch.history[since:]}
    most = len(live)
    for event in watch.history[since:]:
        (live.add if event.state in LIVE_STATES else live.discard)(event.vm)
        most = max(most, len(live))
    return most


async def _finish(stack: ChaosStack, watch: FleetWatch, lab: Lab, run: LoadRun, health: inv.Health, since: int,
                  restarted: frozenset[str] = frozenset()) -> tuple[dict[str, list[str]], dict[str, Any]]:
    result = run.stop()
    found = await inv.check_all(watch, lab.info.libvirt_uri, lab.info.template, result, health, since, restarted)
    return found, result


async def test_f4_libvirtd_restart_with_clones_in_flight(stack: ChaosStack, lab_handle: Lab, watch: FleetWatch,
                                                        load: Any) -> None:
    """F4: libvirtd restarted while two clones are on their way: the serving clone keeps serving, the
    provisioner reconnects and the fleet reaches 3 with nothing left over."""
    health, since = inv.Health(stack), len(watch.history)
    before, run = await _serving(watch, load, 1)
    await watch.scale(3)
    await wait_until(lambda: len(_in_flight(watch)) == 2, 120, 0.05, "two clones in flight")
    flying = sorted(_in_flight(watch))
    states = ", ".join(watch.latest[vm].state.value for vm in flying)
    started = time.monotonic()
    await asyncio.to_thread(lab_handle.restart_libvirtd)
    after = await watch.settle(3, resync=True)
    took = time.monotonic() - started
    found, result = await _finish(stack, watch, lab_handle, run, health, since)
    if not set(before.items()) <= set(after.items()):
        found["I2"].append(f"the serving clone was replaced: {before} -> {after}")
    kept = len(set(flying) & set(after))
    figures = (f"{result['ok']} GETs ok; clones in flight at the restart: {states}; {kept} of 2 finished, "
               f"{2 - kept} replaced; 3 ready {took:.0f} s after the restart; {health.growth()}")
    TIMINGS.append(f"F4 libvirtd restart, 2 clones in flight: {figures}")
    record(Row("F4", "libvirtd restarted, 2 clones in flight", load="sequential GETs, 1-3 VMs", faults=1,
               invariants=inv.verdicts(found), figures=figures))
    assert not any(found.values()), found
    await watch.scale(1)
    await watch.settle(1, resync=True)


def _step_seen(uri: str, known: set[str], step: str) -> str | None:
    """A new domain of ours that reached `step`, as libvirt shows it now: "defined" (any state),
    "started" (running), "leased" (running with a DHCP lease); None when none has."""
    conn = libvirt.open(uri)
    try:
        for domain in conn.listAllDomains():
            name = str(domain.name())
            if name in known:
                continue
            if step == "defined" or (domain.isActive() and (step == "started" or _leased(domain))):
                return name
    finally:
        conn.close()
    return None


def _leased(domain: Any) -> bool:
    try:
        return bool(domain.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE))
    except libvirt.libvirtError:
        return False


async def _kill_provisioner_at(stack: ChaosStack, lab: Lab, watch: FleetWatch, step: str) -> str:
    """Scale 1 -> 2, SIGKILL the provisioner once the new clone reached `step`, start it again;
    once the fleet settles at 2 again, says whether that clone was kept (adopted) or reaped."""
    known = set(watch.latest) | {lab.info.template}
    await watch.scale(2)
    victim = await wait_until(lambda: _step_seen(lab.info.libvirt_uri, known, step), 240, 0.01,
                              f"a new clone {step}")
    stack.kill("provisioner")
    stack.spawn("provisioner")
    kept = victim in await watch.settle(2, resync=True)
    await watch.scale(1)
    await watch.settle(1, resync=True)
    return f"{step}: {'kept' if kept else 'reaped'}"


async def test_f5_provisioner_killed_at_each_step_of_a_clone(stack: ChaosStack, lab_handle: Lab,
                                                            watch: FleetWatch, load: Any) -> None:
    """F5: the provisioner SIGKILLed once a clone is defined, once it runs, and once it has its lease
    (before ready): each time no request id makes two VMs, partial clones are reaped, and the
    fleet settles at its size with nothing left over."""
    health, since = inv.Health(stack), len(watch.history)
    _, run = await _serving(watch, load, 1)
    steps = ("defined", "started", "leased")
    outcome = []
    for step in steps:
        outcome.append(await _kill_provisioner_at(stack, lab_handle, watch, step))
    found, result = await _finish(stack, watch, lab_handle, run, health, since, frozenset({"provisioner"}))
    figures = f"{result['ok']} GETs ok; clone after the kill: {', '.join(outcome)}; {health.growth()}"
    TIMINGS.append(f"F5 provisioner SIGKILLed at {len(steps)} steps: {figures}")
    record(Row("F5", "provisioner SIGKILLed mid-clone", load="sequential GETs, 1-2 VMs", faults=len(steps),
               invariants=inv.verdicts(found), figures=figures))
    assert not any(found.values()), found


async def _status(watch: FleetWatch) -> FleetStatus:
    return await watch.bus.request(watch.bus.subjects.cmd_status, GetStatus(), FleetStatus, timeout=10)


async def test_f7_scaler_leader_killed_halfway_through_a_scale_out(stack: ChaosStack, lab_handle: Lab,
                                                                  watch: FleetWatch, load: Any) -> None:
    """F7: the leading scaler SIGKILLed while a 1 -> 3 scale-out is under way: the other replica takes
    over in the next epoch, the fleet reaches exactly 3 and never holds more than the ceiling."""
    health, since = inv.Health(stack), len(watch.history)
    _, run = await _serving(watch, load, 1)
    first = await _status(watch)
    assert first.leader, first
    leader = first.leader.removeprefix("chaos-")
    await watch.scale(3)
    await wait_until(lambda: _in_flight(watch), 120, 0.05, "a clone in flight")
    killed = time.monotonic()
    stack.kill(leader)
    taken = await wait_until(lambda: _new_leader(watch, first.epoch), 60, 0.2, "another scaler leading")
    took_over = time.monotonic() - killed
    await watch.settle(3, resync=True)
    stack.spawn(leader)
    final = await _status(watch)
    found, result = await _finish(stack, watch, lab_handle, run, health, since, frozenset({leader}))
    most = _most_alive(watch, since)
    if most > CEILING:
        found["I3"].append(f"{most} VMs lived at once, above the ceiling {CEILING}")
    if final.epoch != first.epoch + 1:
        found["I3"].append(f"epoch went {first.epoch} -> {final.epoch}: expected one new leader")
    figures = (f"{result['ok']} GETs ok; {taken} leads in epoch {final.epoch} (was {first.epoch}) "
               f"{took_over:.1f} s after the kill; at most {most} VMs at once; {health.growth()}")
    TIMINGS.append(f"F7 scaler leader SIGKILLed mid scale-out: {figures}")
    record(Row("F7", "scaler leader SIGKILLed mid scale-out", load="sequential GETs, 1-3 VMs", faults=1,
               invariants=inv.verdicts(found), figures=figures))
    assert not any(found.values()), found


async def _new_leader(watch: FleetWatch, epoch: int) -> str | None:
    try:
        status = await _status(watch)
    except Exception:  # the status may time out while the lease changes hands
        return None
    return status.leader if status.leader and status.epoch > epoch else None


async def test_f9_scale_in_drains_before_destroying(stack: ChaosStack, lab_handle: Lab, watch: FleetWatch,
                                                   load: Any) -> None:
    """F9: scaling 2 -> 1 under load: the drained clone gets no new request about a second after its
    drain began, every request in flight finishes, and it is destroyed only after that."""
    health, since = inv.Health(stack), len(watch.history)
    before, run = await _serving(watch, load, 2)
    scaled = len(watch.history)
    await watch.scale(1)
    victim = await wait_until(lambda: _draining(watch, scaled), 120, 0.02, "a clone draining")
    drained_at, address = time.monotonic(), before[victim]
    last_answer = await _last_answer_from(run, address, lambda: watch.ended(victim))
    gone_after = time.monotonic() - drained_at
    await watch.settle(1, resync=True)
    found, result = await _finish(stack, watch, lab_handle, run, health, since)
    quiet = last_answer - drained_at
    if quiet > 1.5:  # 1 s, plus the load client's 0.5 s progress period
        found["I2"].append(f"{address} still answered {quiet:.1f} s into its drain")
    figures = (f"{result['ok']} GETs ok; last answer from the draining clone {max(quiet, 0):.1f} s after the "
               f"drain began (progress read every 0.5 s); destroyed {gone_after:.1f} s after; {health.growth()}")
    TIMINGS.append(f"F9 scale-in drain: {figures}")
    record(Row("F9", "scale-in drain", load="sequential GETs, 2->1 VMs", faults=1, invariants=inv.verdicts(found),
               figures=figures))
    assert not any(found.values()), found


def _draining(watch: FleetWatch, since: int) -> str | None:
    return next((e.vm for e in watch.history[since:] if e.state is VmState.DRAINING), None)


async def _last_answer_from(run: LoadRun, address: str, gone: Any) -> float:
    """Watch the load's per-backend counts until `gone()`; the monotonic time `address`'s count last grew."""
    key = f"Server Address: {address}"
    count, at = run.progress()["bodies"].get(key, 0), time.monotonic()
    deadline = at + 300.0
    while not gone():
        assert time.monotonic() < deadline, f"{address} not destroyed within 300 s of its drain"
        now = run.progress()["bodies"].get(key, 0)
        if now != count:
            count, at = now, time.monotonic()
        await asyncio.sleep(0.05)  # polling the client's progress file
    return at
