"""The `Hypervisor` port on libvirt-python: blocking calls, lifecycle events, reconnects.

libvirt delivers events only while an event loop implementation runs; the default one runs on
one daemon thread per process (it must be registered before the first connection opens), and the
service marshals each event onto its asyncio loop. A close callback marks the connection broken
and the next call opens a new one, so a libvirtd restart costs one failed call at most.

The event thread and the events' meaning live in `libvirt_events`, libvirt's errors as the port's
in `libvirt_errors`, and reading domains and volumes into views in `libvirt_views`; this module
keeps the connection and the port's calls. `ensure_event_thread` stays importable from here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import libvirt
import structlog

from services.provisioner.core.addresses import leases_as_interfaces
from services.provisioner.core.clone import SourceVolume, VolumePlan, template_disk_paths
from services.provisioner.core.ports import (
    AddressSource,
    DomainEvent,
    DomainView,
    EventSink,
    HostFacts,
    HypervisorError,
    Template,
    TemplateMissing,
    VolumeView,
)
from services.provisioner.core.tags import NAMESPACE, PREFIX, VmTag, tag_xml
from services.provisioner.libvirt_errors import errors, failure, message
from services.provisioner.libvirt_events import ensure_event_thread, event_detail, event_kind
from services.provisioner.libvirt_views import PAUSED, domain_view, source_volume

__all__ = ["LibvirtHypervisor", "ensure_event_thread"]  # the thread is re-exported: tests start it from here

log = structlog.get_logger("provisioner.libvirt")

_SOURCES = {
    "lease": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
    "agent": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
}


class LibvirtHypervisor:
    """A libvirt connection for one URI; thread-safe (libvirt connections are)."""

    def __init__(self, uri: str, network: str = "default", keepalive_s: int = 5) -> None:
        self.uri = uri
        self.network = network
        self.keepalive_s = keepalive_s
        self._conn: libvirt.virConnect | None = None
        self._broken = False
        self._callback_id: int | None = None
        self._on_event: EventSink | None = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        return self.uri

    def open(self, on_event: EventSink) -> None:
        self._on_event = on_event
        with self._lock:
            self._reopen()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _reopen(self) -> None:
        ensure_event_thread()
        self._drop()
        with errors(f"cannot connect to {self.uri}"):
            conn = libvirt.open(self.uri)
        self._conn, self._broken = conn, False
        self._watch(conn)
        log.info("libvirt.connected", uri=self.uri)

    def _watch(self, conn: libvirt.virConnect) -> None:
        """Close callback and keepalive where the driver has them (the test driver has neither)."""
        try:
            conn.registerCloseCallback(self._closed, None)
            conn.setKeepAlive(self.keepalive_s, 3)
        except libvirt.libvirtError:
            pass
        if self._on_event is not None:
            self._callback_id = conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None
            )

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if self._callback_id is not None:
                conn.domainEventDeregisterAny(self._callback_id)
            conn.close()
        except libvirt.libvirtError:
            pass
        self._callback_id = None

    def _closed(self, _conn: Any, reason: int, _opaque: Any) -> None:
        log.warning("libvirt.connection_closed", uri=self.uri, reason=reason)
        self._broken = True

    def _lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        kind = event_kind(event, detail)
        if kind is not None and self._on_event is not None:
            self._on_event(DomainEvent(dom.name(), kind, event_detail(event, detail)))

    @property
    def conn(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is None or self._broken or not _alive(self._conn):
                self._reopen()
            assert self._conn is not None
            return self._conn

    def _lookup(self, name: str) -> libvirt.virDomain | None:
        try:
            return self.conn.lookupByName(name)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise failure(f"looking up domain {name}", error) from None

    def template(self, name: str) -> Template:
        dom = self._lookup(name)
        if dom is None:
            raise TemplateMissing(f"template domain '{name}' does not exist on {self.uri}")
        with errors(f"reading template {name}"):
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            sources = {path: self._source_volume(name, path) for path in template_disk_paths(xml)}
        return Template(name, xml, sources)

    def _source_volume(self, template: str, path: str) -> SourceVolume:
        try:
            volume = self.conn.storageVolLookupByPath(path)
        except libvirt.libvirtError:
            raise TemplateMissing(
                f"disk {path} of template '{template}' is not a volume of any storage pool on {self.uri}"
            ) from None
        return source_volume(path, volume)

    def define(self, xml: str) -> None:
        with errors("defining the clone"):
            self.conn.defineXML(xml)

    def create_volume(self, plan: VolumePlan) -> str:
        with errors(f"creating volume {plan.name} in pool {plan.pool}"):
            pool = self.conn.storagePoolLookupByName(plan.pool)
            if plan.mode == "linked":
                return str(pool.createXML(plan.xml, 0).path())
            source = self.conn.storageVolLookupByPath(plan.source)
            return str(pool.createXMLFrom(plan.xml, source, 0).path())

    def start(self, name: str) -> None:
        with errors(f"starting {name}"):
            self.conn.lookupByName(name).create()

    def suspend(self, name: str) -> None:
        dom = self._existing(name)
        with errors(f"pausing {name}"):
            if dom.state()[0] not in PAUSED:
                dom.suspend()

    def resume(self, name: str) -> None:
        """`resume()` only when paused: a pooled VM someone resumed by hand is taken as it is."""
        dom = self._existing(name)
        with errors(f"resuming {name}"):
            if not dom.isActive():
                raise HypervisorError(f"resuming {name}: the domain is not running")
            if dom.state()[0] in PAUSED:
                dom.resume()

    def set_tag(self, name: str, tag: VmTag) -> None:
        dom = self._existing(name)
        with errors(f"rewriting the tag of {name}"):
            live = libvirt.VIR_DOMAIN_AFFECT_LIVE if dom.isActive() else 0
            flags = live | libvirt.VIR_DOMAIN_AFFECT_CONFIG
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, tag_xml(tag), PREFIX, NAMESPACE, flags)

    def set_clock(self, name: str) -> None:
        """`setTime` with the host's time: qemu-ga sets it, then writes the RTC (it needs /sbin/hwclock)."""
        dom = self._existing(name)
        now = time.time()
        with errors(f"setting the clock of {name} through its guest agent"):
            dom.setTime({"seconds": int(now), "nseconds": int(now % 1 * 1e9)}, 0)

    def _existing(self, name: str) -> libvirt.virDomain:
        dom = self._lookup(name)
        if dom is None:
            raise HypervisorError(f"domain {name} no longer exists")
        return dom

    def stop(self, name: str) -> bool:
        dom = self._lookup(name)
        if dom is None:
            return False
        with errors(f"powering off {name}"):
            if dom.isActive():
                dom.destroy()
        return True

    def undefine(self, name: str) -> bool:
        dom = self._lookup(name)
        if dom is None:
            return False
        with errors(f"undefining {name}"):
            dom.undefine()
        return True

    def delete_volume(self, path: str) -> bool:
        try:
            volume = self.conn.storageVolLookupByPath(path)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return False
            raise failure(f"looking up volume {path}", error) from None
        with errors(f"deleting volume {path}"):
            volume.delete(0)
        return True

    def list_volumes(self, pool: str) -> list[VolumeView]:
        with errors(f"listing volumes of pool {pool}"):
            volumes = self.conn.storagePoolLookupByName(pool).listAllVolumes(0)
            return [VolumeView(pool, volume.name(), volume.path()) for volume in volumes]

    def domains(self) -> list[DomainView]:
        with errors("listing domains"):
            listed = self.conn.listAllDomains(0)
        views = (domain_view(dom) for dom in listed)
        return [view for view in views if view is not None]

    def domain(self, name: str) -> DomainView | None:
        dom = self._lookup(name)
        return None if dom is None else domain_view(dom)

    def interface_addresses(self, name: str, source: AddressSource) -> Mapping[str, Any]:
        dom = self._existing(name)
        found = self._network_leases() if source == "lease" else {}
        try:
            return found | (dom.interfaceAddresses(_SOURCES[source], 0) or {})
        except libvirt.libvirtError as error:
            log.debug("libvirt.no_addresses_yet", vm=name, source=source, error=message(error))
            return found

    def host_facts(self) -> HostFacts:
        """`getInfo()`'s logical CPUs, and the free memory (`_free_kib`) capped at `getInfo()`'s total.

        A free figure above the host's whole memory is a driver's mistake in units, not room.
        """
        with errors("reading the host's CPUs and memory"):
            info = self.conn.getInfo()  # [model, memory MiB, cpus, MHz, nodes, sockets, cores, threads]
            free_kib = self._free_kib()
        return HostFacts(cpus=int(info[2]), free_memory_mib=min(free_kib // 1024, int(info[1])))

    def _free_kib(self) -> int:
        """Memory a new guest can have, in KiB: free plus buffers and page cache, which Linux gives back
        when a guest needs it (`getMemoryStats`); where the driver has no such stats (the test driver),
        `getFreeMemory()`, which counts only free pages.
        """
        try:
            stats = self.conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)
        except libvirt.libvirtError:
            return int(self.conn.getFreeMemory()) // 1024
        return sum(int(stats.get(key, 0)) for key in ("free", "buffers", "cached"))

    def _network_leases(self) -> dict[str, Any]:
        """Leases of the configured network (empty when the driver cannot tell, like the test driver)."""
        try:
            leases = self.conn.networkLookupByName(self.network).DHCPLeases()
        except libvirt.libvirtError as error:
            log.debug("libvirt.no_network_leases", network=self.network, error=message(error))
            return {}
        return leases_as_interfaces(leases or [])


def _alive(conn: libvirt.virConnect) -> bool:
    """A local check (no round trip): False once the remote side has gone away."""
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False
