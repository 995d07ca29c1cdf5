"""Placement by what hosts report, through the real scaler on a real nats-server: fake provisioners with
different memory, and two real provisioners on libvirt's test driver with different templates."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from ops.natsserver import NatsServer
from services.scaler.bootstrap import bootstrap
from services.scaler.core.placement import mib
from services.scaler.service import ScalerService
from services.scaler.settings import ScalerSettings
from shared.bus import Bus
from shared.contract.commands import ScaleFleet
from shared.contract.events import VmState
from shared.contract.status import DesiredState
from tests.integration.scaler import conftest
from tests.integration.scaler.fakes import FakeBalancer, FakeProvisioner, decisions
from tests.support import wait_until
from tests.support.h3server import H3Backend


def scaler_settings() -> ScalerSettings:
    """A scaler that lists the hosts every 0.3 s (built per test: the NATS URL comes from its environment)."""
    return ScalerSettings(scaler_id="s1", lease_ttl_s=2.0, scaler_resync_s=0.3)


def hosts_of(scaler: ScalerService) -> dict[str, int]:
    """How many ready VMs the scaler sees on each host."""
    counts: dict[str, int] = {}
    for vm in scaler.fleet.vms.values():
        if vm.state is VmState.READY and vm.host:
            counts[vm.host] = counts.get(vm.host, 0) + 1
    return counts


async def scale(bus: Bus, replicas: int) -> None:
    await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=replicas), DesiredState)


async def test_creates_go_where_memory_is_and_a_host_too_small_gets_none(
    bus: Bus, settings_env: dict[str, str]
) -> None:
    """Scale 0 -> 3 puts every VM on the host with 1 GiB; the one with 100 MiB gets none, and when the big
    host fills up the decision's reason says, per host, why no more VMs fit."""
    said = await decisions(bus)
    big = FakeProvisioner(bus, "h1", max_vms=10, memory_mib=1024, cpus=8)
    small = FakeProvisioner(bus, "h2", max_vms=10, memory_mib=100, cpus=8)
    async with big, small, bootstrap(scaler_settings()) as scaler:
        await wait_until(lambda: scaler.leading and set(scaler.fleet.capacity) == {"h1", "h2"}, 20, what="both hosts")
        await scale(bus, 3)
        await wait_until(lambda: hosts_of(scaler) == {"h1": 3}, 20, what="three ready VMs on h1")
        await wait_until(lambda: scaler.fleet.capacity["h1"].running == set(big.vms), 20, what="h1 listing them")
        await scale(bus, 5)
        await wait_until(lambda: hosts_of(scaler) == {"h1": 4}, 20, what="the fourth VM on h1")
        message = await said.wait_for(lambda m: "no host has room" in json.loads(m.data)["reason"])
    assert small.creates == [] and len(big.creates) == 4 and scaler.fleet.failures.count == 0
    reason = json.loads(message.data)["reason"]
    assert "h1 has 256 MiB free < 2 VMs of 256 MiB (1 not running yet)" in reason
    assert "h2 has 100 MiB free < one VM of 256 MiB" in reason


async def test_scale_in_takes_from_the_fuller_host_though_an_older_vm_is_elsewhere(
    bus: Bus, settings_env: dict[str, str]
) -> None:
    """One VM on h1, then two on h2 (it has more memory free); scale 3 -> 2 with nothing in flight drains one
    of h2's, not h1's older one, so each host keeps one."""
    first = FakeProvisioner(bus, "h1", max_vms=10, memory_mib=1024, cpus=8)
    second = FakeProvisioner(bus, "h2", max_vms=10, memory_mib=4096, cpus=8)
    async with first, FakeBalancer(bus, "b1") as balancer, bootstrap(scaler_settings()) as scaler:
        await wait_until(lambda: scaler.leading and set(scaler.fleet.capacity) == {"h1"}, 20, what="h1 known")
        await scale(bus, 1)
        await wait_until(lambda: hosts_of(scaler) == {"h1": 1}, 20, what="one VM on h1")
        async with second:
            await wait_until(lambda: set(scaler.fleet.capacity) == {"h1", "h2"}, 20, what="h2 known")
            await scale(bus, 3)
            await wait_until(lambda: hosts_of(scaler) == {"h1": 1, "h2": 2}, 20, what="two more VMs, on h2")
            await scale(bus, 2)
            await wait_until(lambda: len(second.destroys) == 1, 20, what="one VM of h2 destroyed")
            await wait_until(lambda: hosts_of(scaler) == {"h1": 1, "h2": 1}, 20, what="one VM per host")
    assert first.destroys == [] and [d.vm for d in balancer.drains] == [second.destroys[0].vm]


@pytest.mark.skipif(conftest.world is None, reason="the provisioner's libvirt test fixtures are not available")
async def test_two_real_provisioners_place_by_their_templates_size_in_the_test_drivers_memory(
    bus: Bus, nats_server: NatsServer, world: Any, tmp_path: Path, settings_env: dict[str, str]
) -> None:
    """Two provisioners on test:///default: the one whose template fits the driver's free memory takes all
    three VMs, the one whose template is bigger than that gets none, and the reason says both."""
    from services.provisioner.bootstrap import bootstrap as provisioner_bootstrap
    from tests.integration.provisioner.conftest import template_xml

    free = min(world.conn.getFreeMemory() // 2**20, world.conn.getInfo()[1])
    roomy, cramped = f"{world.host}-a", f"{world.host}-b"
    big_template = f"{world.template}-big"
    world.conn.defineXML(template_xml(big_template, world.template_volume, memory_mib=free + 1))
    try:
        async with AsyncExitStack() as stack:
            backends = [await stack.enter_async_context(H3Backend(tmp_path)) for _ in range(3)]
            pool = ",".join(b.address for b in backends)
            for host, template in ((roomy, world.template), (cramped, big_template)):
                settings = world.settings(nats_server, host=host, template=template, max_vms=3, static_addresses=pool)
                await stack.enter_async_context(provisioner_bootstrap(settings))
            scaler = await stack.enter_async_context(bootstrap(scaler_settings()))
            await wait_until(lambda: scaler.leading and set(scaler.fleet.capacity) == {roomy, cramped}, 20,
                             what="both hosts' capacity")
            await scale(bus, 3)
            await wait_until(lambda: hosts_of(scaler) == {roomy: 3}, 60, what="three ready VMs on the roomy host")
            await scale(bus, 4)
            expected = f"no host has room: {roomy} at its max_vms (3), {cramped} has {mib(free)} free < one VM of "
            expected += mib(free + 1)
            await wait_until(lambda: expected in (scaler.lease.reason or ""), 20, what="the reason naming both")
            assert len(world.ours()) == 3 and scaler.fleet.failures.count == 0
    finally:
        world.conn.lookupByName(big_template).undefine()
