"""The libvirt adapter on the test driver: template facts, missing pieces, reconnect with events."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from services.provisioner.libvirt_adapter import LibvirtHypervisor
from services.provisioner.ports import DomainEvent, DomainEventKind, TemplateMissing
from tests.integration.provisioner.conftest import URI, World
from tests.support import wait_until

pytestmark = pytest.mark.integration

NODE = Path(__file__).resolve().parents[2] / "fixtures" / "libvirt" / "node.xml"


def test_template_facts_come_from_the_pool() -> None:
    """The template's disk is found as a pool volume with its pool, directory, size and format."""
    hv = LibvirtHypervisor(f"test://{NODE}")
    hv.open(lambda _event: None)
    try:
        template = hv.template("backend-template")
        with pytest.raises(TemplateMissing, match="'nope' does not exist"):
            hv.template("nope")
    finally:
        hv.close()
    (source,) = template.sources.values()
    assert (source.pool, source.pool_dir, source.capacity) == ("fleet-pool", "/fleet-pool", 2**26)
    assert source.format == "qcow2"


def test_template_disk_outside_any_pool_is_missing(world: World) -> None:
    """A template whose disk is no pool volume is refused, naming the disk and the URI."""
    xml = world.conn.lookupByName(world.template).XMLDesc(0).replace(world.template_volume, "/nowhere/disk.qcow2")
    world.conn.defineXML(xml)
    hv = LibvirtHypervisor(URI)
    hv.open(lambda _event: None)
    try:
        with pytest.raises(TemplateMissing, match=r"/nowhere/disk\.qcow2.*test:///default"):
            hv.template(world.template)
    finally:
        hv.close()


async def test_reconnects_after_close_and_keeps_delivering_events(world: World) -> None:
    """After libvirt reports the connection closed, the next call reconnects and lifecycle events still arrive."""
    seen: list[DomainEvent] = []
    lock = threading.Lock()

    def sink(event: DomainEvent) -> None:
        with lock:
            seen.append(event)

    hv = LibvirtHypervisor(URI)
    hv.open(sink)
    try:
        before = hv.conn
        hv._closed(before, 0, None)  # what libvirt's close callback does when libvirtd goes away
        assert hv.domain(world.template) is not None
        assert hv.conn is not before
        dom = world.conn.lookupByName(world.template)
        dom.create()
        dom.destroy()
        await wait_until(lambda: any(e.name == world.template and e.kind is DomainEventKind.STOPPED for e in seen),
                         timeout=10, what="stopped event after reconnect")
    finally:
        hv.close()
