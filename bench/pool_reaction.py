"""Reaction with a warm pool, on real VMs: scale command -> the new VM serving, from the pool and from a boot.

The lab (`ops.lab`: a private libvirtd in a network namespace, the Debian test template under
QEMU) runs the four services as processes (`tests.e2e.stack`) while one HTTP/3 client sends GETs
through the balancer without pause. Each round scales 1 -> 2 and times the command to the new
VM's `ready` event and to its first answer through the balancer (its `Server Address` body
counted by the client), then scales back to 1 and waits for the fleet to settle (and, with a
pool, for the pool to refill). Pool rounds run with `pool_size` 1, boot rounds with 0, in the
same run on the same machine; p50 and p95 of each and the pool / boot ratio are printed.

    .venv/bin/python -m bench pool_reaction    (about 6 minutes under TCG; needs root, QEMU, libvirt)

`QUICFLEET_BENCH_ROUNDS` sets the rounds of each kind (default 5). Where the lab cannot run, the
bench says why and stops.
"""

from __future__ import annotations

import asyncio
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ops.lab import Lab, lab_possible, netns
from shared.bus import Bus, connect
from shared.contract.events import VmState
from shared.contract.policy import PolicyPatch, ScalingPolicy
from shared.contract.subjects import Subjects
from shared.settings import ServiceSettings
from tests.e2e.fleetwatch import BOOT_TIMEOUT_S, TERMINAL, FleetWatch, services_answer
from tests.e2e.load import LoadRun
from tests.e2e.stack import Stack
from tests.support import wait_until

ROUNDS = int(os.environ.get("QUICFLEET_BENCH_ROUNDS", "5"))
ON_THE_WAY = frozenset({VmState.REQUESTED, VmState.CLONING, VmState.BOOTING, VmState.DRAINING})


@dataclass
class Samples:
    """Seconds from the scale command to ready and to the first answer through the balancer, one pair a round."""

    ready: list[float] = field(default_factory=list)
    serving: list[float] = field(default_factory=list)


def nearest_rank(values: list[float], share: float) -> float:
    """The `share` quantile by nearest rank (no interpolation: with a handful of rounds p95 is the worst)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def settled(watch: FleetWatch, serving: int, pooled: int) -> Callable[[], bool]:
    """A check: exactly `serving` ready VMs and `pooled` pooled ones, nothing on its way."""

    def check() -> bool:
        states = [e.state for e in watch.latest.values() if e.state not in TERMINAL]
        on_the_way = [s for s in states if s in ON_THE_WAY]
        return states.count(VmState.READY) == serving and states.count(VmState.POOLED) == pooled and not on_the_way

    return check


def answers(run: LoadRun) -> dict[str, int]:
    """Answers the client has had so far, per `Server Address` body."""
    return dict(run.progress()["bodies"])


async def one_round(watch: FleetWatch, run: LoadRun, pooled: int, into: Samples) -> None:
    """Scale 1 -> 2, time the new VM to ready and to serving, then scale back and wait for the fleet to settle.

    The answers are counted from the command on: a fresh clone may get an address an earlier one had.
    """
    serving, counted = set(watch.ready()), answers(run)
    asked = time.monotonic()
    await watch.scale(2)
    new = await wait_until(lambda: next((vm for vm in watch.ready() if vm not in serving), None),
                           BOOT_TIMEOUT_S, 0.05, "the new VM ready")
    into.ready.append(time.monotonic() - asked)
    body = f"Server Address: {watch.ready()[new]}"
    await wait_until(lambda: answers(run).get(body, 0) > counted.get(body, 0), 60, 0.05, f"answers from {new}")
    into.serving.append(time.monotonic() - asked)
    await watch.scale(1)
    await wait_until(settled(watch, 1, pooled), BOOT_TIMEOUT_S, 0.5, f"1 ready and {pooled} pooled")


async def measure(stack: Stack, lab: Lab) -> dict[str, Samples]:
    """Pool rounds, then boot rounds, against one running stack."""
    assert stack.nats is not None
    bus = Bus(await connect(ServiceSettings(nats_url=stack.nats.url), "quicfleet-bench"), Subjects())
    await services_answer(bus)
    watch = FleetWatch(bus)
    await watch.start()
    results = {"pool": Samples(), "boot": Samples()}
    run: LoadRun | None = None
    try:
        for kind, pooled in (("pool", 1), ("boot", 0)):
            await policy(bus, min_replicas=0, max_replicas=3, pool_size=pooled)
            await watch.scale(1)
            await wait_until(settled(watch, 1, pooled), BOOT_TIMEOUT_S, 0.5, f"1 ready and {pooled} pooled")
            run = run or LoadRun(lab.wrap([]), stack.balancer_url, stack.workdir / "load")  # once a VM serves
            for _ in range(ROUNDS):
                await one_round(watch, run, pooled, results[kind])
    finally:
        outcome = run.stop() if run is not None else {"ok": 0, "failed": 0}
        await bus.drain()
    print(f"load through the balancer meanwhile: {outcome['ok']} GETs answered, {outcome['failed']} failed")
    return results


async def policy(bus: Bus, **fields: int) -> None:
    """Patch the scaling policy and wait for the scaler's answer."""
    await bus.request(bus.subjects.cmd_policy, PolicyPatch(**fields), ScalingPolicy, timeout=30)


def report(results: dict[str, Samples]) -> None:
    """p50 and p95 of each kind, and the pool's over the boot's."""
    figures = {}
    for kind, samples in results.items():
        figures[kind] = {what: (nearest_rank(values, 0.5), nearest_rank(values, 0.95))
                         for what, values in (("ready", samples.ready), ("serving", samples.serving))}
        for what, (p50, p95) in figures[kind].items():
            print(f"  {kind:<4} command -> {what:<7} p50 {p50:6.2f} s  p95 {p95:6.2f} s  ({ROUNDS} rounds)")
    for what in ("ready", "serving"):
        (pool50, pool95), (boot50, boot95) = figures["pool"][what], figures["boot"][what]
        print(f"  pool / boot, command -> {what}: p50 {pool50 / boot50:.3f}x, p95 {pool95 / boot95:.3f}x")


def main() -> None:
    """Start the lab and the stack, measure, report, and leave nothing behind."""
    ok, why = lab_possible()
    if not ok:
        print(f"skipped: the lab cannot run here ({why})")
        return
    with tempfile.TemporaryDirectory(prefix="qf-bench-pool-") as workdir:
        lab = Lab(Path(workdir) / "lab", name=f"qf-bench-{os.getpid()}")
        lab.start()
        stack = Stack(lab, Path(workdir) / "stack")
        try:
            with netns.entered(lab.name):
                stack.start()
                results = asyncio.run(measure(stack, lab))
        finally:
            stack.stop()
            lab.stop()
    print(f"lab: one host, QEMU TCG, {os.cpu_count()} cores; pool_size 1 vs 0, {ROUNDS} rounds each")
    report(results)


if __name__ == "__main__":
    main()
