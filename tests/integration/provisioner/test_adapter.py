"""The libvirt adapter on the test driver: template facts, missing pieces, reconnect with events."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from services.provisioner.core.ports import DomainEvent, DomainEventKind, TemplateMissing
from services.provisioner.libvirt_adapter import LibvirtHypervisor
from tests.integration.provisioner.conftest import URI, World
from tests.support import wait_until

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


async def test_a_suspended_domain_lists_paused_and_its_pause_and_resume_arrive_as_events(world: World) -> None:
    """After `suspend()` the adapter's view says paused (still active) and a SUSPENDED event arrives naming why;
    after `resume()` the view is unpaused and a RESUMED event arrives."""
    seen: list[DomainEvent] = []
    lock = threading.Lock()

    def sink(event: DomainEvent) -> None:
        with lock:
            seen.append(event)

    def kinds() -> list[DomainEventKind]:
        with lock:
            return [e.kind for e in seen if e.name == world.template]

    hv = LibvirtHypervisor(URI)
    hv.open(sink)
    dom = world.conn.lookupByName(world.template)
    try:
        dom.create()
        running = hv.domain(world.template)
        assert running is not None and running.active and not running.paused
        dom.suspend()
        view = hv.domain(world.template)
        assert view is not None and view.active and view.paused
        assert [v.paused for v in hv.domains() if v.name == world.template] == [True]
        await wait_until(lambda: DomainEventKind.SUSPENDED in kinds(), timeout=10, what="suspended event")
        with lock:
            assert next(e.detail for e in seen if e.kind is DomainEventKind.SUSPENDED) == "paused"
        dom.resume()
        resumed = hv.domain(world.template)
        assert resumed is not None and not resumed.paused
        await wait_until(lambda: DomainEventKind.RESUMED in kinds(), timeout=10, what="resumed event")
    finally:
        hv.close()
