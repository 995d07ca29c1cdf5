"""The scaler driving the real provisioner (libvirt's test driver, readiness over real HTTP/3 on loopback)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from ops.natsserver import NatsServer
from services.scaler.bootstrap import bootstrap as scaler_bootstrap
from services.scaler.settings import ScalerSettings
from shared.bus import Bus
from shared.contract.commands import GetStatus, ScaleFleet
from shared.contract.events import VmState
from shared.contract.provisioning import DestroyVm, ListVms, VmList, VmRecord
from shared.contract.status import DesiredState, FleetStatus
from tests.integration.scaler import conftest
from tests.support import wait_until
from tests.support.h3server import H3Backend

pytestmark = [
    pytest.mark.skipif(conftest.world is None, reason="the provisioner's libvirt test fixtures are not available"),
]


async def _ready(bus: Bus, count: int) -> FleetStatus | None:
    status = await bus.request(bus.subjects.cmd_status, GetStatus(), FleetStatus)
    ready = [v for v in status.vms if v.state is VmState.READY]
    return status if len(ready) == count and len(status.vms) == count else None


async def test_scale_one_to_three_and_back_to_two_with_the_real_provisioner(
    bus: Bus, nats_server: NatsServer, world: Any, tmp_path: Path, settings_env: dict[str, str]
) -> None:
    """Scale 1 -> 3 by command makes three ready libvirt domains; scale to 2 destroys exactly one of them."""
    from services.provisioner.bootstrap import bootstrap as provisioner_bootstrap

    async with AsyncExitStack() as stack:
        backends = [await stack.enter_async_context(H3Backend(tmp_path)) for _ in range(3)]
        pool = ",".join(b.address for b in backends)
        await stack.enter_async_context(provisioner_bootstrap(world.settings(nats_server, static_addresses=pool)))
        scaler = await stack.enter_async_context(scaler_bootstrap(ScalerSettings(scaler_id="s1", lease_ttl_s=2)))
        await wait_until(lambda: scaler.leading, 20, what="leadership")
        await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=1), DesiredState)
        await wait_until(lambda: _ready(bus, 1), 30, what="one ready VM")
        await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=3), DesiredState)
        status = await wait_until(lambda: _ready(bus, 3), 60, what="three ready VMs")
        assert sorted(v.address or "" for v in status.vms) == sorted(b.address for b in backends)
        assert len(world.ours()) == 3
        await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=2), DesiredState)
        await wait_until(lambda: _ready(bus, 2), 60, what="two VMs left")
        await wait_until(lambda: len(world.ours()) == 2, 30, what="one domain destroyed in libvirt")


async def test_creates_are_placed_on_hosts_with_room_and_a_full_fleet_waits_without_failures(
    bus: Bus, nats_server: NatsServer, world: Any, tmp_path: Path, settings_env: dict[str, str]
) -> None:
    """Two hosts with max_vms 1: scale to 2 puts one VM on each; scale to 3 sends no create and fails none."""
    from services.provisioner.bootstrap import bootstrap as provisioner_bootstrap

    async with AsyncExitStack() as stack:
        backends = [await stack.enter_async_context(H3Backend(tmp_path)) for _ in range(2)]
        hosts = [f"{world.host}-a", f"{world.host}-b"]
        for host, backend in zip(hosts, backends, strict=True):
            settings = world.settings(nats_server, host=host, max_vms=1, static_addresses=backend.address)
            await stack.enter_async_context(provisioner_bootstrap(settings))
        scaler = await stack.enter_async_context(scaler_bootstrap(ScalerSettings(scaler_id="s1", lease_ttl_s=2)))
        await wait_until(lambda: scaler.leading and set(scaler.fleet.hosts) == set(hosts), 20, what="both hosts")
        await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=2), DesiredState)
        await wait_until(lambda: _ready(bus, 2), 60, what="two ready VMs")
        assert sorted(v.host or "" for v in scaler.fleet.vms.values()) == sorted(hosts)
        await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=3), DesiredState)
        await wait_until(lambda: "every host is at its max_vms" in (scaler.lease.reason or ""), 20,
                         what="the leader saying why it creates nothing")
        assert scaler.fleet.failures.count == 0 and len(world.ours()) == 2


async def test_a_leader_whose_lease_store_was_lost_leads_on_above_the_epoch_the_provisioner_obeys(
    bus: Bus, nats_server: NatsServer, world: Any, tmp_path: Path, settings_env: dict[str, str]
) -> None:
    """A provisioner that obeyed epoch 7 (a leader whose lease store has since been wiped) refuses epoch 1:
    the new leader reads the provisioner's epoch from its list, leads on in epoch 8, and its scale-out runs."""
    from services.provisioner.bootstrap import bootstrap as provisioner_bootstrap

    async with AsyncExitStack() as stack:
        backend = await stack.enter_async_context(H3Backend(tmp_path))
        settings = world.settings(nats_server, static_addresses=backend.address)
        await stack.enter_async_context(provisioner_bootstrap(settings))
        (listing,) = await bus.gather(bus.subjects.prov_list, ListVms(), VmList, window=1.0)
        old = DestroyVm(vm=f"{settings.vm_prefix}gone", request_id="x-old-leader", epoch=7)
        await bus.request(bus.subjects.prov_destroy(listing.host), old, VmRecord)
        scaler = await stack.enter_async_context(scaler_bootstrap(ScalerSettings(scaler_id="s1", lease_ttl_s=2)))
        await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=1), DesiredState)
        await wait_until(lambda: _ready(bus, 1), 30, what="one ready VM despite the older lease")
        assert scaler.lease.epoch == 8
