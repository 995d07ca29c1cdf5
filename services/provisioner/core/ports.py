"""The provisioner's port to a hypervisor: the few blocking calls it needs, as a Protocol.

The real adapter wraps libvirt (`libvirt_adapter.py`); unit tests use a hand-written fake. All
methods block, so async code calls them through `asyncio.to_thread`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, Protocol

from services.provisioner.core.clone import SourceVolume, VolumePlan
from services.provisioner.core.tags import VmTag


class HypervisorError(Exception):
    """A hypervisor call failed; `str()` is a message a person can act on (no trace, no repr)."""

    code = "other"
    """libvirt's error code by name (`no_domain`, `operation_invalid`, ...) when libvirt raised it, for the
    `quicfleet_provisioner_libvirt_errors_total{code}` counter; `other` for our own refusals."""


class TemplateMissing(HypervisorError):
    """The template domain (or its disk volume) does not exist."""


class DomainEventKind(StrEnum):
    """What a libvirt lifecycle event means for us (the rest of libvirt's kinds are ignored)."""

    STARTED = "started"
    STOPPED = "stopped"
    CRASHED = "crashed"
    UNDEFINED = "undefined"
    SUSPENDED = "suspended"
    """Paused (or suspended to memory by the guest): it runs as far as libvirt lists go, but serves nothing."""
    RESUMED = "resumed"


@dataclass(frozen=True)
class DomainEvent:
    """A lifecycle event for domain `name`, already carried over to the event loop's thread."""

    name: str
    kind: DomainEventKind
    detail: str = ""


@dataclass(frozen=True)
class DomainView:
    """One domain as listed: its name, whether it runs, our tag (None if untagged), its MACs, its UUID."""

    name: str
    active: bool
    tag: VmTag | None
    macs: tuple[str, ...] = ()
    uuid: str | None = None
    paused: bool = False
    """libvirt says paused (or suspended to memory); such a domain still counts as active."""


@dataclass(frozen=True)
class VolumeView:
    """One volume of a storage pool as listed: its pool, its name and its path."""

    pool: str
    name: str
    path: str


@dataclass(frozen=True)
class Template:
    """The template domain's inactive XML and the volumes behind its writable disks."""

    name: str
    xml: str
    sources: Mapping[str, SourceVolume]


@dataclass(frozen=True)
class HostFacts:
    """What libvirt says the host has: its logical CPUs and the memory free for new guests (MiB)."""

    cpus: int
    free_memory_mib: int


AddressSource = Literal["lease", "agent"]
EventSink = Callable[[DomainEvent], None]


class Hypervisor(Protocol):
    """What the provisioner asks of libvirt."""

    def open(self, on_event: EventSink) -> None:
        """Connect (again) and deliver lifecycle events to `on_event` on the caller's loop."""

    def close(self) -> None: ...

    def describe(self) -> str:
        """The connection URI, for messages."""

    def template(self, name: str) -> Template:
        """Raise TemplateMissing when the template or one of its disk volumes is absent."""

    def define(self, xml: str) -> None: ...

    def create_volume(self, plan: VolumePlan) -> str:
        """Create the volume and return its path."""

    def start(self, name: str) -> None: ...

    def suspend(self, name: str) -> None:
        """Pause the running domain (already paused is fine): a VM going into the warm pool."""

    def resume(self, name: str) -> None:
        """Let the paused domain run again (already running is fine; not running at all is an error)."""

    def set_tag(self, name: str, tag: VmTag) -> None:
        """Replace the domain's tag, in its live and its persistent definition (a VM taken from the pool)."""

    def set_clock(self, name: str) -> None:
        """Set the guest's clock to the host's through its guest agent (HypervisorError when it cannot)."""

    def stop(self, name: str) -> bool:
        """Power off if running; False when the domain does not exist."""

    def undefine(self, name: str) -> bool:
        """Remove the definition; False when it does not exist."""

    def delete_volume(self, path: str) -> bool:
        """Delete a volume by path; False when it does not exist."""

    def list_volumes(self, pool: str) -> list[VolumeView]:
        """Every volume of storage pool `pool` (HypervisorError when the pool does not exist)."""

    def domains(self) -> list[DomainView]:
        """Every domain on the connection (tags parsed; untagged ones have tag None)."""

    def domain(self, name: str) -> DomainView | None: ...

    def interface_addresses(self, name: str, source: AddressSource) -> Mapping[str, Any]:
        """libvirt's `interfaceAddresses` answer; empty when nothing is known yet."""

    def host_facts(self) -> HostFacts:
        """The host's CPUs and free memory (HypervisorError when libvirt cannot say)."""
