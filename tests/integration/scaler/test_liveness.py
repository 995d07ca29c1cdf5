"""Liveness through the real scaler on a real nats-server: balancers' verdicts (or libvirt's pauses) replace a
sick VM, and a fleet-wide fault is held, with fake provisioner and balancers on the bus."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from services.scaler.bootstrap import bootstrap
from services.scaler.service import ScalerService
from services.scaler.settings import ScalerSettings
from shared.bus import Bus
from shared.contract.commands import GetStatus, PolicyPatch, ScaleFleet
from shared.contract.events import VmState
from shared.contract.policy import ScalingPolicy
from shared.contract.status import DesiredState, FleetStatus
from tests.integration.scaler.fakes import FakeBalancer, FakeProvisioner, decisions
from tests.support import wait_until


@asynccontextmanager
async def fleet_of_three(
    bus: Bus, prov: FakeProvisioner, balancers: list[FakeBalancer], resync_s: float = 15.0
) -> AsyncIterator[ScalerService]:
    """A leading scaler with three ready VMs that every fake balancer reports, and a fast liveness policy."""
    async with bootstrap(ScalerSettings(scaler_id="s1", lease_ttl_s=2.0, scaler_resync_s=resync_s)) as scaler:
        await wait_until(lambda: scaler.leading, 20, what="leadership")
        patch = PolicyPatch(unhealthy_replace_after_s=0.5, unhealthy_replace_interval_s=0, warmup_s=0)
        await bus.request(bus.subjects.cmd_policy, patch, ScalingPolicy)
        await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=3), DesiredState)
        await wait_until(lambda: len(ready(scaler)) == 3, 20, what="three ready VMs")
        await wait_until(lambda: [v.state for v in prov.vms.values()] == [VmState.READY] * 3, 20, what="booted")
        for balancer in balancers:
            balancer.outstanding = dict.fromkeys(prov.vms, 0)
        yield scaler


def ready(scaler: ScalerService) -> list[str]:
    return sorted(v.name for v in scaler.fleet.vms.values() if v.state is VmState.READY)


async def test_a_vm_every_balancer_calls_unhealthy_is_replaced(bus: Bus, settings_env: dict[str, str]) -> None:
    """A VM both balancers report unroutable is destroyed, a new one created, and the fleet is back at three."""
    said = await decisions(bus)
    async with (
        FakeProvisioner(bus) as prov, FakeBalancer(bus, "b1") as one, FakeBalancer(bus, "b2") as two,
        fleet_of_three(bus, prov, [one, two]) as scaler,
    ):
        sick = sorted(prov.vms)[1]
        one.unhealthy = two.unhealthy = {sick}
        await wait_until(lambda: [d.vm for d in prov.destroys] == [sick], 20, what="the sick VM destroyed")
        await wait_until(lambda: len(ready(scaler)) == 3 and sick not in ready(scaler), 20, what="three again")
    assert len(prov.creates) == 4
    assert one.drains == [] and two.drains == [], "a sick VM is destroyed without a drain"
    await said.wait_for(lambda m: f"replacing {sick}" in json.loads(m.data)["reason"])


@pytest.mark.parametrize("announced", [True, False], ids=["event", "list"])
async def test_a_vm_libvirt_reports_paused_is_replaced(
    bus: Bus, settings_env: dict[str, str], announced: bool
) -> None:
    """A VM its provisioner announces (or only lists) paused is replaced after `unhealthy_replace_after_s`,
    though every balancer still calls it healthy, and the decision says it was paused."""
    said = await decisions(bus)
    async with (
        FakeProvisioner(bus) as prov, FakeBalancer(bus, "b1") as one,
        fleet_of_three(bus, prov, [one], resync_s=15.0 if announced else 0.3) as scaler,
    ):
        paused = sorted(prov.vms)[0]
        await prov.pause(paused, announce=announced)
        await wait_until(lambda: [d.vm for d in prov.destroys] == [paused], 20, what="the paused VM destroyed")
        await wait_until(lambda: len(ready(scaler)) == 3 and paused not in ready(scaler), 20, what="three again")
    assert len(prov.creates) == 4 and one.drains == []
    await said.wait_for(lambda m: f"replacing {paused}: paused in libvirt" in json.loads(m.data)["reason"])


async def test_most_of_the_fleet_unhealthy_at_once_is_held(bus: Bus, settings_env: dict[str, str]) -> None:
    """Two of three VMs unhealthy at once (above the hold share) makes the scaler hold and say so in
    `quicfleet status`'s reason, destroying none."""
    async with FakeProvisioner(bus) as prov, FakeBalancer(bus, "b1") as one, fleet_of_three(bus, prov, [one]):
        one.unhealthy = set(sorted(prov.vms)[:2])

        async def holding() -> bool:
            status = await bus.request(bus.subjects.cmd_status, GetStatus(), FleetStatus)
            return "2 of 3 ready VMs unhealthy at once" in (status.reason or "")

        await wait_until(holding, 20, what="the hold in the status reason")
        assert prov.destroys == []


async def test_a_lost_host_is_replaced_elsewhere_and_reconciled_on_return(
    bus: Bus, settings_env: dict[str, str]
) -> None:
    """A provisioner that stops answering has its VMs replaced on the other host; when it answers again with
    them, the surplus is removed and the fleet is back at its size, never above it for good."""
    first, second = FakeProvisioner(bus, "h1"), FakeProvisioner(bus, "h2")
    settings = ScalerSettings(scaler_id="s1", lease_ttl_s=2.0, scaler_resync_s=0.3)
    async with first, second, bootstrap(settings) as scaler:
        await wait_until(lambda: scaler.leading, 20, what="leadership")
        await bus.request(bus.subjects.cmd_policy, PolicyPatch(host_lost_after_s=1), ScalingPolicy)
        await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=4), DesiredState)
        await wait_until(lambda: len(ready(scaler)) == 4 and scaler.fleet.host_seen.keys() == {"h1", "h2"}, 20)
        gone, survivor = (first, second) if first.vms else (second, first)
        stranded = set(gone.vms)
        await gone.__aexit__(None, None, None)
        await wait_until(lambda: len(survivor.vms) == 4, 20, what="replacements on the other host")
        assert gone.destroys == []
        await gone.__aenter__()  # back, with its VMs: more than four exist until the surplus goes
        assert len(first.vms) + len(second.vms) == 4 + len(stranded)
        await wait_until(lambda: len(first.vms) + len(second.vms) == 4, 20, what="the surplus removed")
        await wait_until(lambda: len(ready(scaler)) == 4, 20, what="four ready VMs")
