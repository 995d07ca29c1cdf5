"""Running the `quicfleet` CLI as a real subprocess, and a scripted fleet to point it at."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass

from shared.bus import Bus
from shared.contract.commands import GetStatus, ScaleFleet
from shared.contract.events import VmState, VmStateChanged
from shared.contract.policy import ScalingPolicy
from shared.contract.status import DesiredState, FleetStatus, VmStatus
from shared.endpoints import Endpoint
from shared.runtime import BusService
from shared.settings import ServiceSettings


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


async def cli(url: str, *args: str, timeout: float = 60.0) -> Result:
    """Run `python -m ops.cli --nats-url URL args…` and collect its exit code and output."""
    env = os.environ | {"QUICFLEET_NATS_URL": url, "COLUMNS": "200"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ops.cli", "--nats-url", url, *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


class ScriptedFleet(BusService):
    """A stand-in scaler over real NATS: a scale to N publishes requested, booting, ready for N VMs
    (or failed ones when `fail` is set), and status lists them."""

    name = "scaler"
    description = "scripted fleet for CLI tests"

    def __init__(self, settings: ServiceSettings, fail: bool = False) -> None:
        super().__init__(settings)
        self.fail = fail
        self.vms: dict[str, VmStatus] = {}
        self.desired = 0

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("status", self.subjects.cmd_status, GetStatus, self.status),
            Endpoint("scale", self.subjects.cmd_scale, ScaleFleet, self.scale),
        ]

    async def status(self, _cmd: GetStatus) -> FleetStatus:
        return FleetStatus(desired=self.desired, policy=ScalingPolicy(), vms=list(self.vms.values()))

    async def scale(self, cmd: ScaleFleet) -> DesiredState:
        self.desired = cmd.replicas
        self.spawn(self._boot(cmd.replicas), "boot")
        return DesiredState(desired=cmd.replicas)

    async def _boot(self, replicas: int) -> None:
        good = [VmState.REQUESTED, VmState.BOOTING, VmState.READY]
        steps = [VmState.REQUESTED, VmState.FAILED] if self.fail else good
        for index in range(replicas):
            for state in steps:
                await asyncio.sleep(0.3)
                await self._announce(self.bus, f"qf-{index}", state)

    async def _announce(self, bus: Bus, vm: str, state: VmState) -> None:
        event = VmStateChanged(vm=vm, state=state, reason="template broken" if state is VmState.FAILED else None)
        self.vms[vm] = VmStatus(name=vm, state=state, since=event.at)
        await bus.publish(bus.subjects.vm(state), event)
