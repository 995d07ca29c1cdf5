"""Template versions through NATS on libvirt's test driver: push to two hosts, clone from a version, retire.

The test driver has no volume upload, so its pool here is a directory of real files (the provisioner
then writes the base image's file itself) and the digests are those of real bytes.
"""

from __future__ import annotations

import hashlib
import os
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest
from nats.aio.msg import Msg

from ops.natsserver import NatsServer
from services.provisioner.bootstrap import bootstrap
from services.provisioner.core.tags import NAMESPACE, parse_tag
from services.provisioner.core.versions import base_volume_name
from services.provisioner.libvirt_adapter import ensure_event_thread
from shared.bus import Bus
from shared.contract.base import ErrorCode
from shared.contract.events import VmState
from shared.contract.provisioning import CreateVm, DestroyVm, VmRecord
from shared.contract.templates import (
    HostTemplateVersion,
    ListTemplates,
    ProtectTemplate,
    PushTemplate,
    RetireTemplate,
    TemplateList,
    TemplateVersionReady,
)
from shared.errors import BusError
from tests.integration.provisioner.conftest import URI, World, template_xml
from tests.integration.provisioner.helpers import VmEvents
from tests.support import Collector
from tests.support.h3server import H3Backend


@dataclass
class Images:
    """The test's pool (a real directory), the template and a second source domain with other bytes."""

    world: World
    pool: libvirt.virStoragePool
    directory: Path
    source_v2: str
    digests: dict[str, str]


def _image(pool: libvirt.virStoragePool, directory: Path, name: str) -> tuple[str, str]:
    data = b"QFI\xfb\x00\x00\x00\x03" + bytes(8) + os.urandom(4096)
    (directory / name).write_bytes(data)
    volume = pool.createXML(
        f"<volume><name>{name}</name><capacity>{len(data)}</capacity><target><format type='qcow2'/></target></volume>",
        0,
    )
    return str(volume.path()), hashlib.sha256(data).hexdigest()


@pytest.fixture
def images(tmp_path: Path) -> Iterator[Images]:
    """A dir pool on tmp_path with two images: the template's (v1) and a source domain's (v2)."""
    ensure_event_thread()
    conn = libvirt.open(URI)
    suffix = uuid.uuid4().hex[:8]
    directory = tmp_path / "pool"
    directory.mkdir()
    pool = conn.storagePoolCreateXML(
        f"<pool type='dir'><name>tv-{suffix}</name><target><path>{directory}</path></target></pool>", 0
    )
    v1_path, v1_digest = _image(pool, directory, "tpl.qcow2")
    v2_path, v2_digest = _image(pool, directory, "src-v2.qcow2")
    conn.defineXML(template_xml(f"tpl-{suffix}", v1_path))
    conn.defineXML(template_xml(f"src-{suffix}", v2_path))
    world = World(conn, f"tpl-{suffix}", v1_path, f"test-{suffix}", f"ha-{suffix}")
    yield Images(world, pool, directory, f"src-{suffix}", {"v1": v1_digest, "v2": v2_digest})
    clones = {dom.name() for dom in world.ours()}
    for dom in conn.listAllDomains(0):
        if suffix in dom.name() or dom.name() in clones:
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    pool.destroy()
    conn.close()


def _pool(backends: list[H3Backend]) -> str:
    return ",".join(b.address for b in backends)


async def _push(bus: Bus, host: str, source: str, version: str, digest: str | None = None) -> HostTemplateVersion:
    command = PushTemplate(source=source, version=version, digest=digest)
    return await bus.request(bus.subjects.prov_template_push(host), command, HostTemplateVersion, timeout=10)


async def _lists(bus: Bus) -> dict[str, TemplateList]:
    listed = await bus.gather(bus.subjects.prov_template_list, ListTemplates(), TemplateList, window=1.0)
    return {t.host: t for t in listed}


def _overlay_backing(world: World, dom: libvirt.virDomain) -> str | None:
    disk = ET.fromstring(dom.XMLDesc(0)).find("devices/disk/source")
    overlay = world.conn.storageVolLookupByPath(disk.get("file") if disk is not None else "")
    return ET.fromstring(overlay.XMLDesc(0)).findtext("backingStore/path")


async def test_versions_pushed_to_two_hosts_are_checked_and_listed_per_host(
    bus: Bus, nats_server: NatsServer, images: Images, backends: list[H3Backend]
) -> None:
    """Host A gets v1 and v2, host B v2 with A's digest (its own copy); a wrong digest is a conflict; each ready
    version is announced and each host lists its own."""
    world, host_b = images.world, f"hb-{images.world.host[3:]}"
    ready = Collector()

    async def on_ready(msg: Msg) -> None:
        await ready(msg)

    await bus.nc.subscribe(bus.subjects.template_ready, cb=on_ready)
    settings_a = world.settings(nats_server, static_addresses=_pool(backends))
    async with bootstrap(settings_a), bootstrap(settings_a.model_copy(update={"host": host_b})):
        v1 = await _push(bus, world.host, world.template, "v1")
        v2 = await _push(bus, world.host, images.source_v2, "v2")
        assert (v1.digest, v2.digest) == (images.digests["v1"], images.digests["v2"])
        assert v2.ready and v2.base is not None and world.volume_exists(v2.base)
        b2 = await _push(bus, host_b, images.source_v2, "v2", digest=v2.digest)
        assert b2.host == host_b and b2.digest == v2.digest and b2.base != v2.base
        assert (await _push(bus, world.host, images.source_v2, "v2")).base == v2.base  # a repeat: the same one
        with pytest.raises(BusError) as wrong:
            await _push(bus, host_b, world.template, "v1", digest=v2.digest)
        assert wrong.value.code is ErrorCode.CONFLICT and images.digests["v1"] in wrong.value.message
        seen = await ready.wait_for(lambda m: TemplateVersionReady.model_validate_json(m.data).host == host_b, 5)
        assert TemplateVersionReady.model_validate_json(seen.data).version == "v2"
        lists = await _lists(bus)
    assert sorted(v.version for v in lists[world.host].versions) == ["v1", "v2"]
    assert [v.version for v in lists[host_b].versions] == ["v2"]


async def test_a_clone_of_v2_records_v2_and_holds_its_base_until_destroyed(
    bus: Bus, nats_server: NatsServer, images: Images, backends: list[H3Backend]
) -> None:
    """A create from v2 is tagged v2 on an overlay of v2's base; retiring v2 is refused while that overlay lives
    and while v2 is protected, and done after; v1, on no chain, is retired at once."""
    world = images.world
    events = await VmEvents().start(bus)
    async with bootstrap(world.settings(nats_server, static_addresses=_pool(backends))):
        v1 = await _push(bus, world.host, world.template, "v1")
        v2 = await _push(bus, world.host, images.source_v2, "v2")
        create = CreateVm(request_id="r-1", epoch=1, version="v2")
        record = await bus.request(bus.subjects.prov_create_on(world.host), create, VmRecord)
        event = await events.wait_state(record.vm, VmState.READY)
        assert event.version == "v2" and record.version == "v2"
        (dom,) = world.ours()
        tag = parse_tag(dom.metadata(2, NAMESPACE, 0))
        assert tag is not None and tag.version == "v2" and _overlay_backing(world, dom) == v2.base
        assert {v.version: v.in_use for v in (await _lists(bus))[world.host].versions} == {"v1": 0, "v2": 1}

        retire = bus.subjects.prov_template_retire(world.host)
        with pytest.raises(BusError) as held:
            await bus.request(retire, RetireTemplate(version="v2"), TemplateList)
        assert held.value.code is ErrorCode.CONFLICT and record.vm in held.value.message
        assert world.volume_exists(v2.base or "")
        left = await bus.request(retire, RetireTemplate(version="v1"), TemplateList)
        assert [v.version for v in left.versions] == ["v2"] and not world.volume_exists(v1.base or "")
        assert world.volume_exists(world.template_volume)  # the template's own disk is never a version's base

        destroy = DestroyVm(vm=record.vm, request_id="d-1", epoch=1)
        await bus.request(bus.subjects.prov_destroy(world.host), destroy, VmRecord)
        await events.wait_state(record.vm, VmState.DESTROYED)
        protect = bus.subjects.prov_template_protect(world.host)
        why = ProtectTemplate(version="v2", protected=True, reason="rollout r-1 may roll back")
        await bus.request(protect, why, HostTemplateVersion)
        with pytest.raises(BusError) as kept:
            await bus.request(retire, RetireTemplate(version="v2"), TemplateList)
        assert "rollout r-1" in kept.value.message
        await bus.request(protect, ProtectTemplate(version="v2", protected=False), HostTemplateVersion)
        gone = await bus.request(retire, RetireTemplate(version="v2"), TemplateList)
    assert gone.versions == [] and not world.volume_exists(v2.base or "")


async def test_a_push_cut_short_is_redone_and_an_unready_version_is_not_cloned(
    bus: Bus, nats_server: NatsServer, images: Images, backends: list[H3Backend]
) -> None:
    """A base volume left without its version (a crash mid-copy) is replaced by a whole, checked copy; a create
    naming a version this host does not have is `unavailable` and makes no domain."""
    world = images.world
    name = base_volume_name(images.digests["v2"], world.host)
    (images.directory / name).write_bytes(b"QFI\xfb torn")
    images.pool.createXML(f"<volume><name>{name}</name><capacity>9</capacity></volume>", 0)
    async with bootstrap(world.settings(nats_server, static_addresses=_pool(backends))):
        v2 = await _push(bus, world.host, images.source_v2, "v2")
        assert v2.base is not None and hashlib.sha256(Path(v2.base).read_bytes()).hexdigest() == images.digests["v2"]
        with pytest.raises(BusError) as missing:
            await bus.request(bus.subjects.prov_create_on(world.host), CreateVm(request_id="r-9", epoch=1,
                                                                               version="v9"), VmRecord)
    assert missing.value.code is ErrorCode.UNAVAILABLE and "v9" in missing.value.message
    assert world.ours() == []
