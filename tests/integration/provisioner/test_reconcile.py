"""libvirt as the source of truth: VMs lost behind our back, half-made clones, restarts."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import libvirt
import pytest

from ops.natsserver import NatsServer
from services.provisioner.bootstrap import bootstrap
from services.provisioner.core.clone import SourceVolume, interface_count, plan_clone
from services.provisioner.core.reconcile import HALF_MADE
from services.provisioner.core.tags import NAMESPACE, VmTag, parse_tag
from services.provisioner.identities import random_macs, random_uuid
from shared.bus import Bus
from shared.contract.base import ErrorCode
from shared.contract.events import VmState
from shared.contract.provisioning import CreateVm, ListVms, StartDrain, VmList, VmRecord
from shared.errors import BusError
from tests.integration.provisioner.conftest import POOL, World
from tests.integration.provisioner.helpers import VmEvents
from tests.support import wait_until
from tests.support.h3server import H3Backend


async def test_vm_destroyed_behind_our_back_is_reported_and_cleaned(
    bus: Bus, nats_server: NatsServer, world: World, backends: list[H3Backend]
) -> None:
    """Powering a ready VM off through another libvirt connection gives failed (with why) then destroyed."""
    events = await VmEvents().start(bus)
    async with bootstrap(world.settings(nats_server, static_addresses=backends[0].address)):
        record = await bus.request(bus.subjects.prov_create, CreateVm(request_id="r-1", epoch=1), VmRecord)
        await events.wait_state(record.vm, VmState.READY)
        world.conn.lookupByName(record.vm).destroy()
        failed = await events.wait_state(record.vm, VmState.FAILED)
        await events.wait_state(record.vm, VmState.DESTROYED)
        listed = await bus.gather(bus.subjects.prov_list, ListVms(), VmList, window=0.5)
    assert failed.reason is not None and "outside quicfleet" in failed.reason
    assert not world.domain_exists(record.vm)
    assert listed[0].vms == []


def _half_made_clone(world: World, name: str) -> str:
    """What a provisioner killed between define and start leaves: a defined, tagged clone and its overlay."""
    template = world.conn.lookupByName(world.template).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    capacity = world.conn.storageVolLookupByPath(world.template_volume).info()[1]
    sources = {world.template_volume: SourceVolume(world.template_volume, POOL, "/default-pool", capacity)}
    created = datetime.now(UTC) - timedelta(minutes=5)
    tag = VmTag(world.fleet_id, "r-crashed", created, world.host, "127.0.0.1:9")
    plan = plan_clone(template, name, random_macs(interface_count(template)), tag, sources, uuid=random_uuid())
    world.conn.defineXML(plan.domain_xml)
    (volume,) = plan.volumes
    world.conn.storagePoolLookupByName(POOL).createXML(volume.xml, 0)
    return volume.path


async def test_restart_after_crash_between_define_and_start_leaves_no_orphan(
    bus: Bus, nats_server: NatsServer, world: World
) -> None:
    """At start, a tagged clone that was defined but never started is reported failed, then removed."""
    overlay = _half_made_clone(world, "qf-halfmade")
    events = await VmEvents().start(bus)
    async with bootstrap(world.settings(nats_server)):
        failed = await events.wait_state("qf-halfmade", VmState.FAILED)
        await events.wait_state("qf-halfmade", VmState.DESTROYED)
    assert failed.reason == HALF_MADE and failed.request_id == "r-crashed" and failed.host == world.host
    assert not world.domain_exists("qf-halfmade") and not world.volume_exists(overlay)


async def test_restarted_provisioner_rebuilds_its_fleet_from_libvirt(
    bus: Bus, nats_server: NatsServer, world: World, backends: list[H3Backend]
) -> None:
    """A new provisioner adopts the running VM (address, request id, epoch), republishes it ready and lists it."""
    events = await VmEvents().start(bus)
    settings = world.settings(nats_server, static_addresses=",".join(b.address for b in backends))
    async with bootstrap(settings):
        record = await bus.request(bus.subjects.prov_create, CreateVm(request_id="r-1", epoch=5), VmRecord)
        await events.wait_state(record.vm, VmState.READY)
    seen = len(events.events)
    async with bootstrap(settings):
        again = await events.wait(lambda e: e.vm == record.vm and e.state is VmState.READY
                                  and events.events.index(e) >= seen)
        listed = await bus.gather(bus.subjects.prov_list, ListVms(), VmList, window=0.5)
        repeat = await bus.request(bus.subjects.prov_create, CreateVm(request_id="r-1", epoch=5), VmRecord)
        with pytest.raises(BusError) as stale:
            await bus.request(bus.subjects.prov_create, CreateVm(request_id="r-2", epoch=4), VmRecord)
    assert stale.value.code is ErrorCode.CONFLICT
    assert again.address == backends[0].address and again.request_id == "r-1"
    assert [(v.vm, v.state) for v in listed[0].vms] == [(record.vm, VmState.READY)]
    assert repeat.vm == record.vm
    assert [d.name() for d in world.ours()] == [record.vm]


async def test_reconcile_period_republishes_every_live_vm(
    bus: Bus, nats_server: NatsServer, world: World, backends: list[H3Backend]
) -> None:
    """Each reconcile announces the current state of every VM again (for subscribers that restarted)."""
    events = await VmEvents().start(bus)
    async with bootstrap(world.settings(nats_server, static_addresses=backends[0].address, reconcile_interval_s=0.2)):
        record = await bus.request(bus.subjects.prov_create, CreateVm(request_id="r-1", epoch=1), VmRecord)
        await events.wait_state(record.vm, VmState.READY)
        await wait_until(lambda: events.states(record.vm).count(VmState.READY) >= 3, timeout=30, what="republish")
    disk = ET.fromstring(world.ours()[0].XMLDesc(0)).find("devices/disk/source")
    assert disk is not None and disk.get("file", "").startswith("/default-pool/qf-")


async def test_a_drain_is_kept_in_lists_and_republishes(
    bus: Bus, nats_server: NatsServer, world: World, backends: list[H3Backend]
) -> None:
    """After a StartDrain the VM is listed as draining and republished draining (with its deadline), never ready."""
    events = await VmEvents().start(bus)
    async with bootstrap(world.settings(nats_server, static_addresses=backends[0].address, reconcile_interval_s=0.3)):
        record = await bus.request(bus.subjects.prov_create, CreateVm(request_id="r-1", epoch=1), VmRecord)
        await events.wait_state(record.vm, VmState.READY)
        drain = StartDrain(vm=record.vm, request_id="s-1", epoch=1, deadline_s=7)
        await bus.request(bus.subjects.prov_drain(world.host), drain, VmRecord)

        async def listed_draining() -> bool:
            listed = await bus.gather(bus.subjects.prov_list, ListVms(), VmList, window=0.3)
            return bool(listed) and [v.state for v in listed[0].vms] == [VmState.DRAINING]

        await wait_until(listed_draining, timeout=20, what="draining in the list")
        seen = len(events.events)
        await wait_until(lambda: events.states(record.vm)[seen:].count(VmState.DRAINING) >= 2, timeout=20,
                         what="draining republished")
    assert VmState.READY not in events.states(record.vm)[seen:]
    assert {e.deadline_s for e in events.events if e.state is VmState.DRAINING} == {7.0}


def _bare_volume(world: World, name: str) -> str:
    """A disk with no domain, as a provisioner killed mid-teardown (after undefine) leaves one."""
    xml = f"<volume><name>{name}</name><capacity unit='MiB'>1</capacity><target><format type='qcow2'/></target>"
    return str(world.conn.storagePoolLookupByName(POOL).createXML(xml + "</volume>", 0).path())


async def test_reconcile_deletes_our_disk_without_a_domain_and_nothing_else(
    bus: Bus, nats_server: NatsServer, world: World, backends: list[H3Backend]
) -> None:
    """Reconcile deletes a disk named for this fleet and host that has no domain, keeping foreign and in-use disks."""
    ours = f"vda.{world.fleet_id}.{world.host}.qcow2"
    at_start = _bare_volume(world, f"qf-0badf00d-{ours}")
    foreign = [_bare_volume(world, f"qf-0badf00d-vda.other-{world.fleet_id}.{world.host}.qcow2"),
               _bare_volume(world, f"qf-0badf00d-vda.{world.fleet_id}.other-{world.host}.qcow2")]
    events = await VmEvents().start(bus)
    settings = world.settings(nats_server, static_addresses=backends[0].address, reconcile_interval_s=0.2)
    try:
        async with bootstrap(settings):
            record = await bus.request(bus.subjects.prov_create, CreateVm(request_id="r-1", epoch=1), VmRecord)
            await events.wait_state(record.vm, VmState.READY)
            later = _bare_volume(world, f"qf-1badf00d-{ours}")
            await wait_until(lambda: not world.volume_exists(later), timeout=20, what="the orphan disk deleted")
            (overlay,) = parse_tag(world.conn.lookupByName(record.vm).metadata(2, NAMESPACE, 0)).volumes  # type: ignore[union-attr]
        kept = {path: world.volume_exists(path) for path in [*foreign, overlay, world.template_volume]}
    finally:
        for path in foreign:
            if world.volume_exists(path):
                world.conn.storageVolLookupByPath(path).delete(0)
    assert not world.volume_exists(at_start)
    assert overlay.endswith(f"-{ours}") and [path for path, there in kept.items() if not there] == []
