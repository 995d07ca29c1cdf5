"""The provisioner's libvirt adapter across a real restart of the lab's libvirtd."""

from __future__ import annotations

import threading

import libvirt

from ops.lab import Lab, LabInfo
from services.provisioner.core.ports import DomainEvent, DomainEventKind
from services.provisioner.libvirt_adapter import LibvirtHypervisor
from tests.e2e import vms
from tests.support import wait_until


async def test_adapter_reconnects_after_a_real_libvirtd_restart_with_events(lab: LabInfo, lab_handle: Lab) -> None:
    """libvirtd going away fires the close callback; the next call reconnects and lifecycle events arrive again."""
    seen: list[DomainEvent] = []
    lock = threading.Lock()

    def sink(event: DomainEvent) -> None:
        with lock:
            seen.append(event)

    def saw(kind: DomainEventKind) -> bool:
        with lock:
            return any(e.name == name and e.kind is kind for e in seen)

    name = vms.unique("restart-")
    hv = LibvirtHypervisor(lab.libvirt_uri, lab.network)
    hv.open(sink)
    try:
        setup = libvirt.open(lab.libvirt_uri)
        vms.clone(setup, lab.template, name)
        setup.close()
        first = hv.conn
        lab_handle.restart_libvirtd()
        await wait_until(lambda: hv._broken, timeout=30, what="the close callback from the departed libvirtd")
        hv.start(name)
        assert hv.conn is not first
        await wait_until(lambda: saw(DomainEventKind.STARTED), timeout=30, what="a started event after the restart")
        assert hv.stop(name)
        await wait_until(lambda: saw(DomainEventKind.STOPPED), timeout=30, what="a stopped event after the restart")
    finally:
        hv.close()
        cleanup = libvirt.open(lab.libvirt_uri)
        vms.remove(cleanup, name)
        cleanup.close()
