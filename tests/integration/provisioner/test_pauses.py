"""A VM paused in libvirt (the test driver's `suspend()`) is republished and listed paused, and unpaused on resume."""

from __future__ import annotations

from ops.natsserver import NatsServer
from services.provisioner.bootstrap import bootstrap
from shared.bus import Bus
from shared.contract.events import VmState
from shared.contract.provisioning import CreateVm, ListVms, VmList, VmRecord
from tests.integration.provisioner.conftest import World
from tests.integration.provisioner.helpers import VmEvents
from tests.support import wait_until
from tests.support.h3server import H3Backend


async def test_a_paused_vm_is_republished_paused_then_resumed(
    bus: Bus, nats_server: NatsServer, world: World, backends: list[H3Backend]
) -> None:
    """Suspending a ready VM behind the provisioner's back republishes it `ready` with paused=true at once (and
    lists it so); resuming republishes it unpaused; it is never failed."""
    events = await VmEvents().start(bus)
    async with bootstrap(world.settings(nats_server, static_addresses=backends[0].address)):
        record = await bus.request(bus.subjects.prov_create, CreateVm(request_id="r-1", epoch=1), VmRecord)
        await events.wait_state(record.vm, VmState.READY)
        world.conn.lookupByName(record.vm).suspend()
        paused = await events.wait(lambda e: e.vm == record.vm and e.paused)
        (listed,) = await bus.gather(bus.subjects.prov_list, ListVms(), VmList, window=0.5)
        after = len(events.events)
        world.conn.lookupByName(record.vm).resume()
        await wait_until(lambda: any(e.vm == record.vm and not e.paused for e in events.events[after:]), 10,
                         what="republished unpaused")
    resumed = next(e for e in events.events[after:] if e.vm == record.vm)
    assert paused.state is VmState.READY and resumed.state is VmState.READY and resumed.at == paused.at
    assert [(v.vm, v.paused) for v in listed.vms] == [(record.vm, True)]
    assert VmState.FAILED not in events.states(record.vm)
