"""StartDrain through NATS: the provisioner alone marks a VM draining and publishes `fleet.vm.draining` once."""

from __future__ import annotations

import pytest

from ops.natsserver import NatsServer
from services.provisioner.bootstrap import bootstrap
from shared.bus import Bus
from shared.contract.base import ErrorCode
from shared.contract.events import VmState
from shared.contract.provisioning import CreateVm, DestroyVm, ListVms, StartDrain, VmList, VmRecord
from shared.errors import BusError
from tests.integration.provisioner.conftest import World
from tests.integration.provisioner.helpers import VmEvents
from tests.support.h3server import H3Backend


async def _ready_vm(bus: Bus, events: VmEvents, epoch: int = 1) -> VmRecord:
    record = await bus.request(bus.subjects.prov_create, CreateVm(request_id="r-1", epoch=epoch), VmRecord)
    await events.wait_state(record.vm, VmState.READY)
    return record


async def test_a_drain_publishes_draining_once_with_its_deadline_and_a_repeat_is_answered_as_is(
    bus: Bus, nats_server: NatsServer, world: World, backends: list[H3Backend]
) -> None:
    """StartDrain answers `draining` and publishes one `fleet.vm.draining` with the deadline; a repeat answers the
    same record and publishes nothing (counted up to the `destroyed` that follows on the same subscription)."""
    events = await VmEvents().start(bus)
    async with bootstrap(world.settings(nats_server, static_addresses=backends[0].address)):
        record = await _ready_vm(bus, events)
        drain = bus.subjects.prov_drain(world.host)
        first = await bus.request(drain, StartDrain(vm=record.vm, request_id="s-1", epoch=1, deadline_s=12), VmRecord)
        again = await bus.request(drain, StartDrain(vm=record.vm, request_id="s-2", epoch=1), VmRecord)
        listed = await bus.gather(bus.subjects.prov_list, ListVms(), VmList, window=0.5)
        await bus.request(bus.subjects.prov_destroy(world.host), DestroyVm(vm=record.vm, request_id="d", epoch=1),
                          VmRecord)
        await events.wait_state(record.vm, VmState.DESTROYED)
    assert (first.state, again.state, again.since) == (VmState.DRAINING, VmState.DRAINING, first.since)
    assert [v.state for v in listed[0].vms] == [VmState.DRAINING]
    assert events.states(record.vm)[-3:] == [VmState.READY, VmState.DRAINING, VmState.DESTROYED]
    (draining,) = [e for e in events.events if e.state is VmState.DRAINING]
    assert (draining.vm, draining.host, draining.address, draining.deadline_s) == (
        record.vm, world.host, backends[0].address, 12.0)


async def test_a_drain_from_a_deposed_leader_is_refused_and_changes_nothing(
    bus: Bus, nats_server: NatsServer, world: World, backends: list[H3Backend]
) -> None:
    """A StartDrain with an epoch older than the newest obeyed is `conflict`; the VM stays ready, nothing published."""
    events = await VmEvents().start(bus)
    async with bootstrap(world.settings(nats_server, static_addresses=backends[0].address)):
        record = await _ready_vm(bus, events, epoch=3)
        with pytest.raises(BusError) as stale:
            await bus.request(bus.subjects.prov_drain(world.host), StartDrain(vm=record.vm, request_id="s", epoch=2),
                              VmRecord)
        listed = await bus.gather(bus.subjects.prov_list, ListVms(), VmList, window=0.5)
        await bus.request(bus.subjects.prov_destroy(world.host), DestroyVm(vm=record.vm, request_id="d", epoch=3),
                          VmRecord)
        await events.wait_state(record.vm, VmState.DESTROYED)
    assert stale.value.code is ErrorCode.CONFLICT and "epoch 2" in stale.value.message
    assert [v.state for v in listed[0].vms] == [VmState.READY]
    assert VmState.DRAINING not in events.states(record.vm)


async def test_a_drain_of_an_unknown_or_foreign_vm_is_not_found(
    bus: Bus, nats_server: NatsServer, world: World
) -> None:
    """Draining a name this provisioner has no live VM of (never made, or another tool's domain) is `not_found`."""
    events = await VmEvents().start(bus)
    async with bootstrap(world.settings(nats_server)):
        codes = []
        for name in ("qf-00000000", "test", world.template):
            with pytest.raises(BusError) as caught:
                await bus.request(bus.subjects.prov_drain(world.host), StartDrain(vm=name, request_id="s", epoch=1),
                                  VmRecord)
            codes.append(caught.value.code)
    assert codes == [ErrorCode.NOT_FOUND] * 3
    assert world.domain_exists("test") and all(e.state is not VmState.DRAINING for e in events.events)
