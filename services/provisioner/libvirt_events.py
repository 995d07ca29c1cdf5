"""libvirt's event loop thread, and lifecycle events translated into the port's `DomainEventKind`.

libvirt delivers events only while an event loop implementation runs; the default one runs on
one daemon thread per process (it must be registered before the first connection opens). This
is process-wide state, apart from any one connection, so it lives apart from the adapter; tests
that open their own connections start the thread from here too.
"""

from __future__ import annotations

import threading

import libvirt

from services.provisioner.core.ports import DomainEventKind

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
_SUSPEND_DETAILS = {
    getattr(libvirt, name): name.removeprefix("VIR_DOMAIN_EVENT_SUSPENDED_").lower()
    for name in dir(libvirt) if name.startswith("VIR_DOMAIN_EVENT_SUSPENDED_")
}
"""libvirt's names for the details of a SUSPENDED event (`ioerror`, `watchdog`, `paused`: by hand, ...)."""


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


def event_kind(event: int, detail: int) -> DomainEventKind | None:
    """What a lifecycle event means for us; a stop that was a crash, and a wake-up, say so."""
    kind = _KINDS.get(event)
    if kind is DomainEventKind.STOPPED and detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED:
        return DomainEventKind.CRASHED
    if kind is DomainEventKind.STARTED and detail == libvirt.VIR_DOMAIN_EVENT_STARTED_WAKEUP:
        return DomainEventKind.RESUMED  # back from a guest's suspend to memory (PMSUSPENDED)
    return kind


def event_detail(event: int, detail: int) -> str:
    """Why libvirt paused a domain in its own words (`ioerror`, `paused`: by hand); other details as numbers."""
    if event == libvirt.VIR_DOMAIN_EVENT_SUSPENDED:
        return _SUSPEND_DETAILS.get(detail, str(detail))
    return str(detail)
