"""The provisioner through NATS only, on libvirt's test driver, with readiness over real HTTP/3."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import libvirt
import pytest

from ops.natsserver import NatsServer
from services.provisioner.bootstrap import bootstrap
from services.provisioner.core.tags import NAMESPACE, parse_tag
from shared.bus import Bus
from shared.contract.base import ErrorCode
from shared.contract.events import VmState
from shared.contract.provisioning import CreateVm, DestroyVm, ListVms, VmList, VmRecord
from shared.errors import BusError
from tests.integration.provisioner.conftest import World
from tests.integration.provisioner.helpers import VmEvents
from tests.support.h3server import H3Backend


def _pool(backends: list[H3Backend]) -> str:
    return ",".join(b.address for b in backends)


async def test_create_makes_one_tagged_vm_and_reports_ready_with_address(
    bus: Bus, nats_server: NatsServer, world: World, backends: list[H3Backend]
) -> None:
    """A create gives one tagged, running clone with an overlay disk, and requested..ready events with its address."""
    events = await VmEvents().start(bus)
    async with bootstrap(world.settings(nats_server, static_addresses=_pool(backends))):
        record = await bus.request(bus.subjects.prov_create, CreateVm(request_id="r-1", epoch=1), VmRecord)
        ready = await events.wait_state(record.vm, VmState.READY)
    assert events.states(record.vm)[:4] == [VmState.REQUESTED, VmState.CLONING, VmState.BOOTING, VmState.READY]
    assert ready.address == backends[0].address and ready.host == world.host and ready.request_id == "r-1"
    assert backends[0].requests >= 1
    (dom,) = world.ours()
    assert dom.name() == record.vm and dom.isActive()
    tag = parse_tag(dom.metadata(2, NAMESPACE, 0))
    assert tag is not None and tag.request_id == "r-1" and tag.host == world.host
    disk = ET.fromstring(dom.XMLDesc(0)).find("devices/disk/source")
    overlay = world.conn.storageVolLookupByPath(disk.get("file"))  # type: ignore[union-attr]
    assert ET.fromstring(overlay.XMLDesc(0)).findtext("backingStore/path") == world.template_volume


async def test_destroy_removes_domain_and_overlay_and_is_idempotent(
    bus: Bus, nats_server: NatsServer, world: World, backends: list[H3Backend]
) -> None:
    """Destroy powers off, undefines and deletes the overlay; destroying again still answers destroyed."""
    events = await VmEvents().start(bus)
    async with bootstrap(world.settings(nats_server, static_addresses=_pool(backends))):
        record = await bus.request(bus.subjects.prov_create, CreateVm(request_id="r-1", epoch=1), VmRecord)
        await events.wait_state(record.vm, VmState.READY)
        (overlay,) = parse_tag(world.ours()[0].metadata(2, NAMESPACE, 0)).volumes  # type: ignore[union-attr]
        destroy = DestroyVm(vm=record.vm, request_id="d-1", epoch=1)
        gone = await bus.request(bus.subjects.prov_destroy(world.host), destroy, VmRecord)
        again = await bus.request(bus.subjects.prov_destroy(world.host), destroy, VmRecord)
        await events.wait_state(record.vm, VmState.DESTROYED)
    assert gone.state is VmState.DESTROYED and again.state is VmState.DESTROYED
    assert VmState.FAILED not in events.states(record.vm)
    assert not world.domain_exists(record.vm) and not world.volume_exists(overlay)
    assert world.volume_exists(world.template_volume)


async def test_repeated_request_id_makes_no_second_vm(
    bus: Bus, nats_server: NatsServer, world: World, backends: list[H3Backend]
) -> None:
    """Two creates with one request id answer with the same VM, and libvirt holds one clone."""
    events = await VmEvents().start(bus)
    async with bootstrap(world.settings(nats_server, static_addresses=_pool(backends))):
        first = await bus.request(bus.subjects.prov_create, CreateVm(request_id="same", epoch=1), VmRecord)
        second = await bus.request(bus.subjects.prov_create, CreateVm(request_id="same", epoch=1), VmRecord)
        await events.wait_state(first.vm, VmState.READY)
        third = await bus.request(bus.subjects.prov_create, CreateVm(request_id="same", epoch=1), VmRecord)
    assert first.vm == second.vm == third.vm and third.state is VmState.READY
    assert [d.name() for d in world.ours()] == [first.vm]


async def test_garbage_commands_get_invalid_and_service_keeps_answering(
    bus: Bus, nats_server: NatsServer, world: World
) -> None:
    """Non-JSON, wrong types, hostile names and absurd epochs are `invalid`; list still answers."""
    async with bootstrap(world.settings(nats_server)):
        garbage = [
            (bus.subjects.prov_create, b"\xff\x00"),
            (bus.subjects.prov_create, b'{"request_id": "r", "epoch": -1}'),
            (bus.subjects.prov_create, b'{"request_id": "../../etc", "epoch": 1}'),
            (bus.subjects.prov_create, b'{"request_id": "r", "epoch": 1e300}'),
            (bus.subjects.prov_destroy(world.host), b'{"vm": "a b; rm -rf /", "request_id": "r", "epoch": 1}'),
            (bus.subjects.prov_destroy(world.host), b'{"vm": "qf-1", "request_id": "r", "epoch": 1, "x": 1}'),
            (bus.subjects.prov_create, b"x" * 300_000),
        ]
        for subject, payload in garbage:
            msg = await bus.nc.request(subject, payload, timeout=5)
            body = json.loads(msg.data)
            assert body["ok"] is False and body["error"]["code"] == "invalid", body
            assert "Traceback" not in body["error"]["message"]
        listed = await bus.gather(bus.subjects.prov_list, ListVms(), VmList, window=0.5)
    assert [item.host for item in listed] == [world.host]
    assert world.ours() == []


async def test_foreign_vm_stale_epoch_and_ceiling_are_refused(
    bus: Bus, nats_server: NatsServer, world: World, backends: list[H3Backend]
) -> None:
    """Destroying a VM not ours is not_found; an older epoch is conflict; past max_vms is unavailable."""
    async with bootstrap(world.settings(nats_server, static_addresses=_pool(backends), max_vms=1)):
        destroy = bus.subjects.prov_destroy(world.host)
        for foreign in ("test", world.template, "someone-else"):
            with pytest.raises(BusError) as caught:
                await bus.request(destroy, DestroyVm(vm=foreign, request_id="d", epoch=3), VmRecord)
            assert caught.value.code is ErrorCode.NOT_FOUND
        with pytest.raises(BusError) as stale:
            await bus.request(bus.subjects.prov_create, CreateVm(request_id="r-0", epoch=2), VmRecord)
        await bus.request(bus.subjects.prov_create, CreateVm(request_id="r-1", epoch=3), VmRecord)
        with pytest.raises(BusError) as full:
            await bus.request(bus.subjects.prov_create, CreateVm(request_id="r-2", epoch=3), VmRecord)
    assert stale.value.code is ErrorCode.CONFLICT and "epoch 2" in stale.value.message
    assert full.value.code is ErrorCode.UNAVAILABLE and "max_vms=1" in full.value.message
    assert world.domain_exists("test") and world.domain_exists(world.template)
    assert len(world.ours()) == 1


async def test_missing_template_is_logged_and_answered_unavailable(
    bus: Bus, nats_server: NatsServer, world: World
) -> None:
    """With no template the service still starts; create is `unavailable` naming template and URI."""
    async with bootstrap(world.settings(nats_server, template="no-such-template")):
        with pytest.raises(BusError) as caught:
            await bus.request(bus.subjects.prov_create, CreateVm(request_id="r", epoch=1), VmRecord)
        listed = await bus.gather(bus.subjects.prov_list, ListVms(), VmList, window=0.5)
    assert caught.value.code is ErrorCode.UNAVAILABLE
    assert "no-such-template" in caught.value.message and "test:///default" in caught.value.message
    assert len(listed) == 1


async def test_static_addresses_can_come_from_the_template_metadata(
    bus: Bus, nats_server: NatsServer, world: World, backends: list[H3Backend]
) -> None:
    """With no static_addresses setting, the pool in the template's <qf:template> metadata is used."""
    template = world.conn.lookupByName(world.template)
    template.setMetadata(2, f"<template><addresses>{backends[1].address}</addresses></template>", "qf", NAMESPACE,
                         libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    events = await VmEvents().start(bus)
    async with bootstrap(world.settings(nats_server)):
        record = await bus.request(bus.subjects.prov_create, CreateVm(request_id="r-1", epoch=1), VmRecord)
        ready = await events.wait_state(record.vm, VmState.READY)
    assert record.address == ready.address == backends[1].address
    assert backends[1].requests >= 1
