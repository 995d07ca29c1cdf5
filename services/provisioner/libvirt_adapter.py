"""The `Hypervisor` port on libvirt-python: blocking calls, lifecycle events, reconnects.

libvirt delivers events only while an event loop implementation runs; the default one runs on
one daemon thread per process (it must be registered before the first connection opens), and the
service marshals each event onto its asyncio loop. A close callback marks the connection broken
and the next call opens a new one, so a libvirtd restart costs one failed call at most.
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import libvirt
import structlog

from services.provisioner.core.addresses import leases_as_interfaces
from services.provisioner.core.clone import SourceVolume, VolumePlan, template_disk_paths
from services.provisioner.core.ports import (
    AddressSource,
    DomainEvent,
    DomainEventKind,
    DomainView,
    EventSink,
    HostFacts,
    HypervisorError,
    Template,
    TemplateMissing,
    VolumeView,
)
from services.provisioner.core.tags import NAMESPACE, PREFIX, VmTag, parse_tag, tag_xml

log = structlog.get_logger("provisioner.libvirt")

_event_thread_lock = threading.Lock()
_event_threads: list[threading.Thread] = []
_KINDS = {
    libvirt.VIR_DOMAIN_EVENT_STARTED: DomainEventKind.STARTED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED: DomainEventKind.STOPPED,
    libvirt.VIR_DOMAIN_EVENT_CRASHED: DomainEventKind.CRASHED,
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: DomainEventKind.UNDEFINED,
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: DomainEventKind.SUSPENDED,
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: DomainEventKind.SUSPENDED,
    libvirt.VIR_DOMAIN_EVENT_RESUMED: DomainEventKind.RESUMED,
}
_PAUSED = frozenset({libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PMSUSPENDED})
_SUSPEND_DETAILS = {
    getattr(libvirt, name): name.removeprefix("VIR_DOMAIN_EVENT_SUSPENDED_").lower()
    for name in dir(libvirt) if name.startswith("VIR_DOMAIN_EVENT_SUSPENDED_")
}
"""libvirt's names for the details of a SUSPENDED event (`ioerror`, `watchdog`, `paused`: by hand, ...)."""
_SOURCES = {
    "lease": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
    "agent": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
}


def ensure_event_thread() -> None:
    """Register libvirt's default event loop and run it on a daemon thread (once per process)."""
    with _event_thread_lock:
        if _event_threads:
            return
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors arrive as exceptions
        libvirt.virEventRegisterDefaultImpl()
        thread = threading.Thread(target=_run_events, name="libvirt-events", daemon=True)
        thread.start()
        _event_threads.append(thread)


def _run_events() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


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
        with _errors(f"cannot connect to {self.uri}"):
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
        kind = _kind(event, detail)
        if kind is not None and self._on_event is not None:
            self._on_event(DomainEvent(dom.name(), kind, _detail(event, detail)))

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
            raise _failure(f"looking up domain {name}", error) from None

    def template(self, name: str) -> Template:
        dom = self._lookup(name)
        if dom is None:
            raise TemplateMissing(f"template domain '{name}' does not exist on {self.uri}")
        with _errors(f"reading template {name}"):
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
        pool = volume.storagePoolLookupByVolume()
        pool_dir = ET.fromstring(pool.XMLDesc(0)).findtext("target/path") or ""
        fmt = ET.fromstring(volume.XMLDesc(0)).find("target/format")
        kind = fmt.get("type", "raw") if fmt is not None else "raw"
        return SourceVolume(path, pool.name(), pool_dir, volume.info()[1], kind)

    def define(self, xml: str) -> None:
        with _errors("defining the clone"):
            self.conn.defineXML(xml)

    def create_volume(self, plan: VolumePlan) -> str:
        with _errors(f"creating volume {plan.name} in pool {plan.pool}"):
            pool = self.conn.storagePoolLookupByName(plan.pool)
            if plan.mode == "linked":
                return str(pool.createXML(plan.xml, 0).path())
            source = self.conn.storageVolLookupByPath(plan.source)
            return str(pool.createXMLFrom(plan.xml, source, 0).path())

    def start(self, name: str) -> None:
        with _errors(f"starting {name}"):
            self.conn.lookupByName(name).create()

    def suspend(self, name: str) -> None:
        dom = self._existing(name)
        with _errors(f"pausing {name}"):
            if dom.state()[0] not in _PAUSED:
                dom.suspend()

    def resume(self, name: str) -> None:
        """`resume()` only when paused: a pooled VM someone resumed by hand is taken as it is."""
        dom = self._existing(name)
        with _errors(f"resuming {name}"):
            if not dom.isActive():
                raise HypervisorError(f"resuming {name}: the domain is not running")
            if dom.state()[0] in _PAUSED:
                dom.resume()

    def set_tag(self, name: str, tag: VmTag) -> None:
        dom = self._existing(name)
        with _errors(f"rewriting the tag of {name}"):
            live = libvirt.VIR_DOMAIN_AFFECT_LIVE if dom.isActive() else 0
            flags = live | libvirt.VIR_DOMAIN_AFFECT_CONFIG
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, tag_xml(tag), PREFIX, NAMESPACE, flags)

    def set_clock(self, name: str) -> None:
        """`setTime` with the host's time: qemu-ga sets it, then writes the RTC (it needs /sbin/hwclock)."""
        dom = self._existing(name)
        now = time.time()
        with _errors(f"setting the clock of {name} through its guest agent"):
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
        with _errors(f"powering off {name}"):
            if dom.isActive():
                dom.destroy()
        return True

    def undefine(self, name: str) -> bool:
        dom = self._lookup(name)
        if dom is None:
            return False
        with _errors(f"undefining {name}"):
            dom.undefine()
        return True

    def delete_volume(self, path: str) -> bool:
        try:
            volume = self.conn.storageVolLookupByPath(path)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return False
            raise _failure(f"looking up volume {path}", error) from None
        with _errors(f"deleting volume {path}"):
            volume.delete(0)
        return True

    def list_volumes(self, pool: str) -> list[VolumeView]:
        with _errors(f"listing volumes of pool {pool}"):
            volumes = self.conn.storagePoolLookupByName(pool).listAllVolumes(0)
            return [VolumeView(pool, volume.name(), volume.path()) for volume in volumes]

    def domains(self) -> list[DomainView]:
        with _errors("listing domains"):
            listed = self.conn.listAllDomains(0)
        views = (self._view(dom) for dom in listed)
        return [view for view in views if view is not None]

    def domain(self, name: str) -> DomainView | None:
        dom = self._lookup(name)
        return None if dom is None else self._view(dom)

    def _view(self, dom: libvirt.virDomain) -> DomainView | None:
        """None when the domain vanished while we looked at it."""
        try:
            name, active = dom.name(), bool(dom.isActive())
            tag = _tag_of(dom)
            macs = _macs(dom.XMLDesc(0)) if tag is not None else ()
            uuid = dom.UUIDString().lower()
            paused = active and dom.state()[0] in _PAUSED
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise _failure("reading domain", error) from None
        return DomainView(name, active, tag, macs, uuid, paused)

    def interface_addresses(self, name: str, source: AddressSource) -> Mapping[str, Any]:
        dom = self._existing(name)
        found = self._network_leases() if source == "lease" else {}
        try:
            return found | (dom.interfaceAddresses(_SOURCES[source], 0) or {})
        except libvirt.libvirtError as error:
            log.debug("libvirt.no_addresses_yet", vm=name, source=source, error=_message(error))
            return found

    def host_facts(self) -> HostFacts:
        """`getInfo()`'s logical CPUs, and the free memory (`_free_kib`) capped at `getInfo()`'s total.

        A free figure above the host's whole memory is a driver's mistake in units, not room.
        """
        with _errors("reading the host's CPUs and memory"):
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
            log.debug("libvirt.no_network_leases", network=self.network, error=_message(error))
            return {}
        return leases_as_interfaces(leases or [])


def _kind(event: int, detail: int) -> DomainEventKind | None:
    """What a lifecycle event means for us; a stop that was a crash, and a wake-up, say so."""
    kind = _KINDS.get(event)
    if kind is DomainEventKind.STOPPED and detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED:
        return DomainEventKind.CRASHED
    if kind is DomainEventKind.STARTED and detail == libvirt.VIR_DOMAIN_EVENT_STARTED_WAKEUP:
        return DomainEventKind.RESUMED  # back from a guest's suspend to memory (PMSUSPENDED)
    return kind


def _detail(event: int, detail: int) -> str:
    """Why libvirt paused a domain in its own words (`ioerror`, `paused`: by hand); other details as numbers."""
    if event == libvirt.VIR_DOMAIN_EVENT_SUSPENDED:
        return _SUSPEND_DETAILS.get(detail, str(detail))
    return str(detail)


def _alive(conn: libvirt.virConnect) -> bool:
    """A local check (no round trip): False once the remote side has gone away."""
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _tag_of(dom: libvirt.virDomain) -> Any:
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, 0)
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            return None
        raise
    return parse_tag(text)


def _macs(xml: str) -> tuple[str, ...]:
    root = ET.fromstring(xml)
    return tuple(mac.get("address", "") for mac in root.findall("devices/interface/mac"))


def _message(error: libvirt.libvirtError) -> str:
    return error.get_error_message() or "unknown libvirt error"


@contextmanager
def _errors(what: str) -> Iterator[None]:
    """Turn libvirt's exceptions into HypervisorError with a message saying what we were doing."""
    try:
        yield
    except libvirt.libvirtError as error:
        raise _failure(what, error) from None


_LEVELS = ("VIR_ERR_NONE", "VIR_ERR_WARNING", "VIR_ERR_ERROR")
"""Error levels, not codes, though they share the prefix (and numbers 0-2 with codes)."""
_CODES = {getattr(libvirt, name): name[len("VIR_ERR_"):].lower() for name in dir(libvirt)
          if name.startswith("VIR_ERR_") and isinstance(getattr(libvirt, name), int) and name not in _LEVELS}
"""libvirt's error numbers by name (`VIR_ERR_NO_DOMAIN` -> `no_domain`), for the error counter's label."""


def _failure(what: str, error: libvirt.libvirtError) -> HypervisorError:
    """A HypervisorError saying what we were doing, carrying libvirt's error code by name."""
    failure = HypervisorError(f"{what}: {_message(error)}")
    failure.code = _CODES.get(error.get_error_code(), "unknown")
    return failure
