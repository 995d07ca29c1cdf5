"""The warm pool through the real scaler on a real nats-server, with a fake provisioner that pools and takes VMs
as the real one does: refill after a take, a scale to 0 that keeps the pool, `pool_size=0`, stale VMs recycled."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from services.scaler.bootstrap import bootstrap
from services.scaler.service import ScalerService
from services.scaler.settings import ScalerSettings
from shared.bus import Bus
from shared.contract.commands import GetStatus, PolicyPatch, ScaleFleet
from shared.contract.events import VmState
from shared.contract.policy import ScalingPolicy
from shared.contract.status import DesiredState, FleetStatus, PoolStatus
from tests.integration.scaler.fakes import FakeBalancer, FakeProvisioner, decisions
from tests.support import wait_until


@asynccontextmanager
async def pooling(bus: Bus, prov: FakeProvisioner, **policy: object) -> AsyncIterator[ScalerService]:
    """A leading scaler that knows `prov`'s host by name, with this pool policy (min_replicas 0) stored."""
    async with bootstrap(ScalerSettings(scaler_id="s1", lease_ttl_s=2.0, scaler_resync_s=0.3)) as scaler:
        await wait_until(lambda: scaler.leading and prov.host in scaler.fleet.hosts, 20, what="leader and host")
        await bus.request(bus.subjects.cmd_policy, PolicyPatch(min_replicas=0, warmup_s=0, **policy), ScalingPolicy)
        yield scaler


async def scale(bus: Bus, replicas: int) -> None:
    await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=replicas), DesiredState)


def states(prov: FakeProvisioner) -> dict[VmState, int]:
    """How many of its VMs the provisioner holds in each state."""
    return dict(Counter(record.state for record in prov.vms.values()))


async def test_a_take_is_refilled(bus: Bus, settings_env: dict[str, str]) -> None:
    """With `pool_size` 2 the host gets two pooled VMs; a scale to 1 resumes one of them instead of booting one,
    and the next evaluation refills the pool, saying so."""
    said = await decisions(bus)
    prov = FakeProvisioner(bus, "h1", max_vms=10)
    async with prov, pooling(bus, prov, pool_size=2) as scaler:
        await wait_until(lambda: len(prov.pooled()) == 2, 20, what="two pooled VMs")
        await scale(bus, 1)
        await wait_until(lambda: len(prov.taken) == 1, 20, what="a pooled VM taken")
        (first,) = prov.taken
        await wait_until(lambda: states(prov) == {VmState.READY: 1, VmState.POOLED: 2}, 20,
                         what="the taken VM ready and the pool refilled")
        await said.wait_for(lambda m: "pool: refilling 1 on h1" in json.loads(m.data)["reason"])
        status = await bus.request(bus.subjects.cmd_status, GetStatus(), FleetStatus)
    assert [c.pooled for c in prov.creates] == [True, True, False, True] and prov.destroys == []
    assert scaler.fleet.vms[first].state is VmState.READY and scaler.fleet.failures.count == 0
    assert status.pools == [PoolStatus(host="h1", pooled=2)]
    assert [(v.state, v.pool) for v in status.vms if v.name == first] == [(VmState.READY, False)]


async def test_a_scale_to_zero_keeps_the_pool_and_pool_size_zero_removes_it(
    bus: Bus, settings_env: dict[str, str]
) -> None:
    """Scaling 2 -> 0 drains and destroys the two serving VMs and leaves the pooled one; `pool_size=0` then
    destroys it without a drain."""
    prov = FakeProvisioner(bus, "h1", max_vms=10)
    async with prov, FakeBalancer(bus, "b1") as balancer, pooling(bus, prov, pool_size=1) as scaler:
        await wait_until(lambda: len(prov.pooled()) == 1, 20, what="a pooled VM")
        await scale(bus, 2)
        await wait_until(lambda: states(prov) == {VmState.READY: 2, VmState.POOLED: 1}, 20,
                         what="two ready VMs and a full pool")
        serving = sorted(r.vm for r in prov.vms.values() if r.state is VmState.READY)
        balancer.outstanding = dict.fromkeys(serving, 0)
        await scale(bus, 0)
        await wait_until(lambda: sorted(d.vm for d in prov.destroys) == serving, 20, what="the serving VMs destroyed")
        await wait_until(lambda: not any(v.state is VmState.READY for v in scaler.fleet.vms.values()), 20,
                         what="the scaler seeing them gone")
        (kept,) = prov.pooled()
        status = await bus.request(bus.subjects.cmd_status, GetStatus(), FleetStatus)
        assert status.desired == 0 and status.pools == [PoolStatus(host="h1", pooled=1)]
        await bus.request(bus.subjects.cmd_policy, PolicyPatch(pool_size=0), ScalingPolicy)
        await wait_until(lambda: prov.vms == {}, 20, what="the pool removed")
    assert [d.vm for d in prov.destroys][-1] == kept
    assert sorted(d.vm for d in balancer.drains) == serving, "a pooled VM is never drained"
    assert [c.pooled for c in prov.creates].count(True) == 2  # the first pooled VM was taken, then refilled once


async def test_a_stale_pooled_vm_is_recycled(bus: Bus, settings_env: dict[str, str]) -> None:
    """A pooled VM listed as paused 120 s ago, past `pool_max_age_s` 60, is destroyed and replaced by a fresh one,
    and the decision says why."""
    said = await decisions(bus)
    prov = FakeProvisioner(bus, "h1", max_vms=10, stale_pooled=1, stale_age_s=120)
    async with prov, pooling(bus, prov, pool_size=1, pool_max_age_s=60) as scaler:
        await wait_until(lambda: len(prov.destroys) == 1, 20, what="the stale VM destroyed")
        stale = prov.destroys[0].vm
        await wait_until(lambda: len(prov.pooled()) == 1 and prov.pooled() != [stale], 20, what="a fresh pooled VM")
        message = await said.wait_for(lambda m: f"pool: recycling {stale} (paused" in json.loads(m.data)["reason"])
        fresh = prov.pooled()[0]
        await wait_until(lambda: fresh in scaler.fleet.vms and stale not in scaler.fleet.vms, 20, what="the view")
    assert [c.pooled for c in prov.creates] == [True, True] and [d.vm for d in prov.destroys] == [stale]
    assert "> pool_max_age_s 60)" in json.loads(message.data)["reason"]


async def test_a_share_sized_pool_grows_with_the_fleet(bus: Bus, settings_env: dict[str, str]) -> None:
    """With `pool_share` 0.5 and no `pool_size`, an empty fleet keeps no pool; scaling to 4 fills the pool to 2,
    and scaling back to 2 keeps those 2 (the share sheds only past twice its size)."""
    prov = FakeProvisioner(bus, "h1", max_vms=10)
    async with prov, FakeBalancer(bus, "b1") as balancer, pooling(bus, prov, pool_share=0.5):
        await scale(bus, 4)
        await wait_until(lambda: states(prov) == {VmState.READY: 4, VmState.POOLED: 2}, 20,
                         what="four ready VMs and a pool of two")
        balancer.outstanding = {r.vm: 0 for r in prov.vms.values() if r.state is VmState.READY}
        pool = {r.vm for r in prov.vms.values() if r.state is VmState.POOLED}
        await scale(bus, 2)
        await wait_until(lambda: states(prov) == {VmState.READY: 2, VmState.POOLED: 2}, 20,
                         what="two ready VMs, the pool kept")
    assert [c.pooled for c in prov.creates].count(True) == 2 and not prov.taken
    assert len(prov.destroys) == 2 and pool.isdisjoint(d.vm for d in prov.destroys)
