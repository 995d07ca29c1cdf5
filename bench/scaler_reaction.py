"""Control-plane reaction: a load snapshot crosses the target -> the create command reaches a provisioner.

Everything goes through a real nats-server on loopback: a `fleet.load` snapshot is published,
the leader scaler evaluates on arrival and sends `CreateVm`, a stand-in provisioner stamps its
arrival. The baseline, measured in the same run, is one plain publish -> receive on the same
server: the floor any NATS-driven control plane pays. The HPA's 15 s sync period (mean wait
7.5 s) is printed for scale.

    .venv/bin/python -m bench scaler_reaction
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from nats.aio.msg import Msg

from ops.natsserver import NatsServer
from services.scaler.bootstrap import bootstrap
from services.scaler.service import ScalerService
from services.scaler.settings import ScalerSettings
from shared.bus import Bus, connect
from shared.contract.commands import PolicyPatch
from shared.contract.events import VmState, VmStateChanged
from shared.contract.load import FleetLoaded, VmLoad
from shared.contract.policy import ScalingPolicy
from shared.contract.provisioning import CreateVm, VmRecord
from shared.contract.subjects import Subjects
from shared.endpoints import ok_reply

TRIALS = 20
TARGET = 8.0
WARM = ("vm-a", "vm-b")


class Provisioner:
    """Answers creates at once and stamps when each arrived."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.arrived: asyncio.Queue[float] = asyncio.Queue()

    async def on_create(self, msg: Msg) -> None:
        stamp = time.perf_counter()
        cmd = CreateVm.model_validate_json(msg.data)
        record = VmRecord(vm=f"vm-{cmd.request_id.split('-')[-1]}", state=VmState.REQUESTED,
                          since=datetime.now(UTC), request_id=cmd.request_id, host="h1")
        await msg.respond(ok_reply(record))
        await self.arrived.put(stamp)


def snapshot(per_vm: float) -> FleetLoaded:
    return FleetLoaded(window_s=1, outstanding=per_vm * len(WARM),
                       vms=[VmLoad(vm=name, outstanding=per_vm) for name in WARM])


async def floor(bus: Bus) -> list[float]:
    """Plain publish -> receive latency on the same server."""
    got: asyncio.Queue[float] = asyncio.Queue()

    async def on(_msg: Msg) -> None:
        await got.put(time.perf_counter())

    await bus.nc.subscribe("bench.echo", cb=on)
    out = []
    for _ in range(TRIALS):
        start = time.perf_counter()
        await bus.nc.publish("bench.echo", b"{}")
        out.append(await asyncio.wait_for(got.get(), 5) - start)
    return out


async def setup(bus: Bus, prov: Provisioner, scaler: ScalerService) -> None:
    """Two warm VMs, then a policy whose minimum (2) makes them the desired fleet."""
    await bus.nc.subscribe(bus.subjects.prov_create, cb=prov.on_create)
    for name in WARM:
        await bus.publish(bus.subjects.vm(VmState.READY), VmStateChanged(vm=name, state=VmState.READY, host="h1"))
    await poll(lambda: len(scaler.fleet.vms) == len(WARM))
    # no look-ahead: the staircase of trials would otherwise be projected upwards, and a create
    # would leave before the load that crosses the target (this measures reaction, not sizing)
    patch = PolicyPatch.model_validate({
        "min_replicas": len(WARM), "warmup_s": 0, "manual_hold_s": 0, "scale_up_period_s": 0,
        "max_replicas": 100, "scale_up_max_step": 100, "scale_up_lookahead_s": 0,
    })
    await bus.request(bus.subjects.cmd_policy, patch, ScalingPolicy)


async def poll(condition: Callable[[], bool], timeout: float = 20) -> None:
    """Wait until `condition` holds (set-up only, never inside a measurement)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("set-up did not converge")
        await asyncio.sleep(0.02)


async def reactions(bus: Bus, prov: Provisioner) -> list[float]:
    """Per trial: a quiet snapshot (recommendation = current size), then one that asks for one more VM."""
    out = []
    for trial in range(TRIALS):
        size = len(WARM) + trial
        await bus.publish(bus.subjects.load, snapshot(TARGET * size / len(WARM)))
        await asyncio.sleep(0.15)
        start = time.perf_counter()
        await bus.publish(bus.subjects.load, snapshot(TARGET * (size + 1) / len(WARM)))
        out.append(await asyncio.wait_for(prov.arrived.get(), 10) - start)
    return out


async def run() -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp))
        server.start()
        try:
            settings = ScalerSettings(nats_url=server.url, scaler_id="bench", log_level="warning")
            bus = Bus(await connect(settings, "bench"), Subjects())
            async with bootstrap(settings) as scaler:
                await poll(lambda: scaler.leading)
                prov = Provisioner(bus)
                await setup(bus, prov, scaler)
                base = await floor(bus)
                measured = await reactions(bus, prov)
            await bus.drain()
        finally:
            server.stop()
    return base, measured


def main() -> None:
    """Print reaction latency figures and ratios."""
    from shared.logging import configure_logging

    configure_logging("warning", "console")
    base, measured = asyncio.run(run())
    p50, worst = statistics.median(measured), max(measured)
    b50 = statistics.median(base)
    print(f"publish->receive floor: p50 {b50 * 1e3:.2f} ms")
    print(f"load crosses target -> CreateVm at provisioner ({TRIALS} trials): p50 {p50 * 1e3:.2f} ms, "
          f"max {worst * 1e3:.2f} ms")
    print(f"ratio to floor (p50): {p50 / b50:.1f}x; share of the 1 s goal (max): {worst:.3f}; "
          f"HPA mean sync wait 7.5 s / ours p50: {7.5 / p50:.0f}x")


if __name__ == "__main__":
    main()
