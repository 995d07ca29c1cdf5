"""The warm pool through NATS on libvirt's test driver: a pooled VM is paused in libvirt, taken by a plain
create, and kept pooled across a provisioner restart."""

from __future__ import annotations

import libvirt

from ops.natsserver import NatsServer
from services.provisioner.bootstrap import bootstrap
from services.provisioner.core.tags import NAMESPACE, VmTag, parse_tag
from shared.bus import Bus
from shared.contract.events import VmState
from shared.contract.provisioning import CreateVm, ListVms, VmList, VmRecord
from tests.integration.provisioner.conftest import World
from tests.integration.provisioner.helpers import VmEvents
from tests.support.h3server import H3Backend


def _tag(world: World, vm: str) -> VmTag | None:
    return parse_tag(world.conn.lookupByName(vm).metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, 0))


def _state(world: World, vm: str) -> int:
    return int(world.conn.lookupByName(vm).state()[0])


async def test_a_pooled_vm_is_paused_then_a_plain_create_takes_it_to_ready(
    bus: Bus, nats_server: NatsServer, world: World, backends: list[H3Backend]
) -> None:
    """A pooled create ends in `fleet.vm.pooled` with its domain paused and tagged; a plain create answers with
    that VM (booting, its own request id), resumes it, checks it again and reports it ready, with no clone."""
    events = await VmEvents().start(bus)
    async with bootstrap(world.settings(nats_server, static_addresses=backends[0].address)):
        made = await bus.request(bus.subjects.prov_create, CreateVm(request_id="p-1", epoch=1, pooled=True), VmRecord)
        pooled = await events.wait_state(made.vm, VmState.POOLED)
        paused_state, pool_tag, probes = _state(world, made.vm), _tag(world, made.vm), backends[0].requests
        taken = await bus.request(bus.subjects.prov_create_on(world.host), CreateVm(request_id="r-1", epoch=2),
                                  VmRecord)
        ready = await events.wait_state(made.vm, VmState.READY)
        (listed,) = await bus.gather(bus.subjects.prov_list, ListVms(), VmList, window=0.5)
    assert pooled.paused and pooled.address == backends[0].address and pooled.request_id == "p-1"
    assert paused_state == libvirt.VIR_DOMAIN_PAUSED and pool_tag is not None and pool_tag.pooled
    assert (taken.vm, taken.state, taken.request_id) == (made.vm, VmState.BOOTING, "r-1")
    assert (ready.request_id, ready.paused, ready.address) == ("r-1", False, backends[0].address)
    assert backends[0].requests > probes
    assert _state(world, made.vm) == libvirt.VIR_DOMAIN_RUNNING
    tag = _tag(world, made.vm)
    assert tag is not None and (tag.pooled, tag.request_id, tag.epoch) == (False, "r-1", 2)
    assert [d.name() for d in world.ours()] == [made.vm]
    assert [(v.vm, v.state) for v in listed.vms] == [(made.vm, VmState.READY)]
    assert not any(e.paused for e in events.events if e.vm == made.vm and e.state is not VmState.POOLED)


async def test_a_restarted_provisioner_keeps_a_pooled_vm_pooled(
    bus: Bus, nats_server: NatsServer, world: World, backends: list[H3Backend]
) -> None:
    """After a restart the paused pool VM is republished and listed `pooled` (not probed, not failed), and a
    plain create still takes it."""
    events = await VmEvents().start(bus)
    settings = world.settings(nats_server, static_addresses=backends[0].address)
    async with bootstrap(settings):
        made = await bus.request(bus.subjects.prov_create, CreateVm(request_id="p-1", epoch=1, pooled=True), VmRecord)
        await events.wait_state(made.vm, VmState.POOLED)
    seen, probes = len(events.events), backends[0].requests
    async with bootstrap(settings):
        again = await events.wait(lambda e: e.vm == made.vm and events.events.index(e) >= seen)
        (listed,) = await bus.gather(bus.subjects.prov_list, ListVms(), VmList, window=0.5)
        probes_after_restart = backends[0].requests
        taken = await bus.request(bus.subjects.prov_create, CreateVm(request_id="r-1", epoch=1), VmRecord)
        await events.wait_state(made.vm, VmState.READY)
    assert (again.state, again.paused, again.request_id) == (VmState.POOLED, True, "p-1")
    assert [(v.vm, v.state, v.paused) for v in listed.vms] == [(made.vm, VmState.POOLED, True)]
    assert probes_after_restart == probes and taken.vm == made.vm
    assert VmState.FAILED not in events.states(made.vm)
