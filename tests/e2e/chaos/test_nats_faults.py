"""Reliability matrix, NATS rows on the lab: the steady baseline (L1), nats-server SIGKILLed and
restarted again and again (F1), NATS down for a while (F2), a lame-duck stop (F3).

Steady HTTP/3 load runs through the balancer to two real clones during each fault; the data
plane does not need NATS to serve, so no request may fail. Each scenario checks I1-I4 and
records its row (tests/support/chaos.py). Short variants here; QUICFLEET_CHAOS_LONG=1 gives the
matrix's full lengths.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import pytest

from ops.lab import Lab
from shared.contract.commands import ScaleFleet
from shared.contract.status import DesiredState
from shared.errors import BusError
from tests.e2e.chaos import invariants as inv
from tests.e2e.chaos.probes import LeaseWrites, all_connected, resynced, utc_now
from tests.e2e.chaos.stack import ChaosStack
from tests.e2e.conftest import TIMINGS
from tests.e2e.fleetwatch import FleetWatch
from tests.e2e.load import LoadRun
from tests.support import wait_until
from tests.support.chaos import Row, long_variants, record

pytestmark = pytest.mark.chaos

LONG = long_variants()
KV_GAP_LIMIT_S = 5.0


async def _two_serving(watch: FleetWatch, load: Any) -> tuple[dict[str, str], LoadRun]:
    await watch.scale(2)
    before = await watch.settle(2, resync=True)
    run = load()
    await wait_until(lambda: all(run.seen(a) for a in before.values()), 120, 0.5, "answers from both clones")
    return before, run


async def _scale_until_accepted(watch: FleetWatch, replicas: int, timeout: float = 60.0) -> tuple[int, float]:
    """Send ScaleFleet until one is answered (NATS may be down at the moment); returns the tries and
    the monotonic time of the answer."""
    tries = 0

    async def accepted() -> bool:
        nonlocal tries
        tries += 1
        try:
            await watch.bus.request(watch.bus.subjects.cmd_scale, ScaleFleet(replicas=replicas), DesiredState, 3)
        except BusError:
            await asyncio.sleep(0.5)
            return False
        return True

    await wait_until(accepted, timeout, 0.1, f"ScaleFleet({replicas}) accepted")
    return tries, time.monotonic()


async def _check_fleet(stack: ChaosStack, watch: FleetWatch, lab: Lab, since: int) -> dict[str, list[str]]:
    """I1 and I3 after a scenario (I2 and I4 are the caller's)."""
    i1 = await inv.no_orphans(watch.bus, lab.info.libvirt_uri, lab.info.template)
    return {"I1": i1, "I3": inv.exactly_once(watch, since)}


def _quicfleet_load(lab: Lab, url: str, rate: float, seconds: float) -> dict[str, Any]:
    """`quicfleet load` inside the namespace, open loop at `rate`; its --json summary."""
    argv = lab.wrap([sys.executable, "-m", "ops.cli", "--json", "load", url, "--rate", str(rate),
                     "--duration", str(seconds)])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120, check=False)
    assert done.stdout.strip(), f"quicfleet load printed nothing: {done.stderr[-600:]}"
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


async def test_l1_steady_load_through_the_balancer_gets_every_answer(
    stack: ChaosStack, lab_handle: Lab, watch: FleetWatch
) -> None:
    """L1: with two clones and no fault, open-loop HTTP/3 load through the balancer gets every answer."""
    health, since = inv.Health(stack), len(watch.history)
    await watch.scale(2)
    await watch.settle(2, resync=True)
    rate, seconds = (200.0, 300.0) if LONG else (20.0, 20.0)
    summary = await asyncio.to_thread(_quicfleet_load, lab_handle, stack.balancer_url, rate, seconds)
    found = await _check_fleet(stack, watch, lab_handle, since) | {"I4": health.problems()}
    found["I2"] = [f"{summary['failed']} failed: {summary['errors']}"] if summary["failed"] else []
    ms = summary["latency_ms"]
    figures = (f"{summary['ok']} of {summary['requests']} ok at {summary['achieved_rps']:.0f} req/s; "
               f"p50 {ms['p50']} ms, p99 {ms['p99']} ms; {health.growth()}")
    TIMINGS.append(f"L1 baseline: {figures}")
    record(Row("L1", "no fault (baseline)", load=f"{rate:g} req/s for {seconds:g} s, 2 VMs",
               invariants=inv.verdicts(found), figures=figures))
    assert not any(found.values()), found


async def _kill_and_restart(stack: ChaosStack, down_s: float) -> float:
    """SIGKILL nats-server, keep it down `down_s`, start it again; returns when it listens again."""
    assert stack.nats is not None
    stack.nats.kill()
    await asyncio.sleep(down_s)  # the fault's own length, not a wait for an event
    await asyncio.to_thread(stack.restart_nats_in_namespace)
    return time.monotonic()


async def test_f1_nats_killed_again_and_again_under_load(stack: ChaosStack, lab_handle: Lab, watch: FleetWatch,
                                                        load: Any) -> None:
    """F1: nats-server SIGKILLed and restarted every few seconds: 0 failed requests, every service back
    each time, KV writes resume within 5 s, and a scale-out sent in between happens exactly once."""
    health, since = inv.Health(stack), len(watch.history)
    _, run = await _two_serving(watch, load)
    periods = [30.0] * 6 + [5.0] * 12 if LONG else [5.0] * 6  # long: 3 min at 30 s, then the hard variant
    kills, rhythm = len(periods), "every 30 s for 3 min, then every 5 s" if LONG else "every 5 s"
    back_times, write_delays, gaps = [], [], []
    async with LeaseWrites(watch.bus) as writes:
        for kill, period in enumerate(periods):
            started = time.monotonic()
            back = await _kill_and_restart(stack, 0.2)
            back_times.append(await all_connected(stack))
            if kill == kills // 2:
                await _scale_until_accepted(watch, 3)
            await asyncio.sleep(max(0.0, period - (time.monotonic() - started)))  # the fault's rhythm
            write_delays.append(writes.first_after(back))
            gaps.append(writes.longest_gap(back, time.monotonic()))
    await watch.settle(3, resync=True)
    await watch.scale(2)
    await watch.settle(2, resync=True)
    result = run.stop()
    found = await _check_fleet(stack, watch, lab_handle, since) | {"I4": health.problems()}
    found["I2"] = [f"{result['failed']} failed: {result['failures']}"] if result["failed"] else []
    late = [d for d in write_delays if d is None or d > KV_GAP_LIMIT_S] + [g for g in gaps if g > KV_GAP_LIMIT_S]
    figures = (f"{result['ok']} GETs ok; all services back in max {max(back_times):.1f} s; first KV write after "
               f"NATS back max {max(d or 99 for d in write_delays):.1f} s, longest gap {max(gaps):.1f} s; "
               f"{health.growth()}")
    TIMINGS.append(f"F1 NATS killed x{kills} {rhythm}: {figures}")
    record(Row("F1", f"nats-server SIGKILLed {rhythm}", load="sequential GETs, 2-3 VMs", faults=kills,
               invariants=inv.verdicts(found), figures=figures))
    assert not any(found.values()), found
    assert not late, f"KV writes stalled past {KV_GAP_LIMIT_S} s: delays {write_delays}, gaps {gaps}"


async def test_f2_nats_down_for_a_while_under_load(stack: ChaosStack, lab_handle: Lab, watch: FleetWatch,
                                                  load: Any) -> None:
    """F2: NATS down for a long stretch: the data plane serves on, no service exits, a command sent
    meanwhile fails loudly, and the state is back within 10 s of NATS's return."""
    health, since = inv.Health(stack), len(watch.history)
    _, run = await _two_serving(watch, load)
    down_s = 180.0 if LONG else 20.0
    assert stack.nats is not None
    stack.nats.kill()
    with pytest.raises(BusError):
        await watch.bus.request(watch.bus.subjects.cmd_scale, ScaleFleet(replicas=3), DesiredState, 3)
    await asyncio.sleep(down_s)  # the outage's own length
    assert not stack.exited(), stack.exited()
    returned = utc_now()
    await asyncio.to_thread(stack.restart_nats_in_namespace)
    connected = await all_connected(stack)
    state = await resynced(watch.bus, 2, returned)
    result = run.stop()
    found = await _check_fleet(stack, watch, lab_handle, since) | {"I4": health.problems()}
    found["I2"] = [f"{result['failed']} failed: {result['failures']}"] if result["failed"] else []
    if state > 10.0:
        found["I3"].append(f"state resynced only {state:.1f} s after NATS returned")
    figures = (f"{result['ok']} GETs ok during {down_s:g} s down; services reconnected {connected:.1f} s, "
               f"status and balancer report fresh {state:.1f} s after return; {health.growth()}")
    TIMINGS.append(f"F2 NATS down {down_s:g} s: {figures}")
    record(Row("F2", f"NATS down {down_s:g} s", load="sequential GETs, 2 VMs", faults=1,
               invariants=inv.verdicts(found), figures=figures))
    assert not any(found.values()), found


async def test_f3_lame_duck_stop_loses_no_command(stack: ChaosStack, lab_handle: Lab, watch: FleetWatch,
                                                 load: Any) -> None:
    """F3: nats-server in lame-duck mode sends its clients away and exits; they reconnect to it
    started again, and a scale command sent during the lame-duck period is carried out once."""
    health, since = inv.Health(stack), len(watch.history)
    _, run = await _two_serving(watch, load)
    assert stack.nats is not None and stack.nats.process is not None
    stack.lame_duck()
    scaling = asyncio.create_task(_scale_until_accepted(watch, 3, timeout=120))
    await asyncio.to_thread(stack.nats.process.wait, 60)
    exited = time.monotonic()
    await asyncio.to_thread(stack.restart_nats_in_namespace)
    tries, accepted_at = await scaling
    when = "before the server exited" if accepted_at < exited else "once it was back"
    connected = await all_connected(stack)
    await watch.settle(3, resync=True)
    await watch.scale(2)
    await watch.settle(2, resync=True)
    result = run.stop()
    found = await _check_fleet(stack, watch, lab_handle, since) | {"I4": health.problems()}
    found["I2"] = [f"{result['failed']} failed: {result['failures']}"] if result["failed"] else []
    figures = (f"{result['ok']} GETs ok; ScaleFleet(3) sent in lame duck, accepted {when} "
               f"({tries} tries) and carried out once; "
               f"services back {connected:.1f} s after restart; {health.growth()}")
    TIMINGS.append(f"F3 lame duck: {figures}")
    record(Row("F3", "NATS lame-duck stop", load="sequential GETs, 2-3 VMs", faults=1,
               invariants=inv.verdicts(found), figures=figures))
    assert not any(found.values()), found
