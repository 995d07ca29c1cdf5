"""The provisioner service: NATS endpoints and loops around `Fleet` and the libvirt adapter.

Commands come from the leader scaler (`fleet.prov.*`: create, destroy, drain, list; and the template
versions' push, list, protect and retire, `templates.py`, from it or from people); every state
change goes out as a `fleet.vm.<state>` event, and this is the only process that publishes them.
libvirt lifecycle events arrive on libvirt's thread and are handed to the event loop through a
queue; a periodic reconcile rebuilds the picture from libvirt. This is the edge: the fleet's
refusals (`core/errors.py`) and libvirt's failures become bus errors here (`CODES`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import structlog

from services.provisioner.basevolumes import BaseVolumes
from services.provisioner.boot import Probe
from services.provisioner.core.errors import (
    CannotClone,
    CannotDrain,
    NoRoom,
    NotOurs,
    Refused,
    RemovalIncomplete,
    StaleEpoch,
    UnknownVersion,
    UnknownVm,
    VersionConflict,
)
from services.provisioner.core.machine import VmEntry, to_event
from services.provisioner.core.ports import DomainEvent, Hypervisor, HypervisorError, TemplateMissing
from services.provisioner.fleet import Fleet
from services.provisioner.settings import ProvisionerSettings
from services.provisioner.telemetry import ProvisionerTelemetry
from services.provisioner.templates import TemplateVersions
from shared.bus import Bus
from shared.contract.base import ErrorCode
from shared.contract.provisioning import CreateVm, DestroyVm, ListVms, StartDrain, VmList, VmRecord
from shared.contract.templates import (
    HostTemplateVersion,
    ListTemplates,
    ProtectTemplate,
    PushTemplate,
    RetireTemplate,
    TemplateList,
    TemplateVersionReady,
    TemplateVersionRetired,
)
from shared.endpoints import Endpoint
from shared.errors import BusError
from shared.metricsserver import MetricsServer
from shared.runtime import BusService

log = structlog.get_logger("provisioner.service")
T = TypeVar("T")
CODES: dict[type[Refused], ErrorCode] = {
    StaleEpoch: ErrorCode.CONFLICT,
    CannotDrain: ErrorCode.CONFLICT,
    NoRoom: ErrorCode.UNAVAILABLE,
    CannotClone: ErrorCode.UNAVAILABLE,
    RemovalIncomplete: ErrorCode.UNAVAILABLE,
    NotOurs: ErrorCode.NOT_FOUND,
    UnknownVm: ErrorCode.NOT_FOUND,
    VersionConflict: ErrorCode.CONFLICT,
    UnknownVersion: ErrorCode.NOT_FOUND,
}
"""How each refusal reads on the wire; libvirt failing (`HypervisorError`) is `unavailable`."""


def bus_error(error: Refused | HypervisorError) -> BusError:
    """The bus error a refusal or a libvirt failure is answered with (the nearest class in `CODES`)."""
    code = next((CODES[kind] for kind in type(error).__mro__ if kind in CODES), ErrorCode.UNAVAILABLE)
    return BusError(code, str(error))


async def answered(work: Awaitable[T]) -> T:
    """Run a command's work; its refusal or libvirt's failure is raised as the bus error the caller sees."""
    try:
        return await work
    except (Refused, HypervisorError) as error:
        raise bus_error(error) from None


class ProvisionerService(BusService):
    """quicfleet's provisioner: the only process that talks to libvirt."""

    name = "provisioner"
    description = "quicfleet provisioner: clones, boots and destroys backend VMs through libvirt"

    def __init__(
        self, settings: ProvisionerSettings, hv: Hypervisor, probe: Probe, bus: Bus | None = None,
        telemetry: ProvisionerTelemetry | None = None, metrics: MetricsServer | None = None,
        store: BaseVolumes | None = None,
    ) -> None:
        """`telemetry` sees every published state (boot and resume times); `metrics` serves it (None: off);
        `store` reads and writes template base images (its own libvirt connection, opened on first use)."""
        super().__init__(settings, bus)
        self.settings: ProvisionerSettings = settings
        self.hv = hv
        self.telemetry = telemetry
        self.metrics = metrics
        self.fleet = Fleet(settings, hv, probe, self._publish)
        self._events: asyncio.Queue[DomainEvent] = asyncio.Queue()
        self._reconciled = asyncio.Event()
        self.store = store or BaseVolumes(settings.libvirt_uri)
        self.templates = TemplateVersions(settings, self.store, self._announce)

    def endpoints(self) -> list[Endpoint]:
        subjects = self.subjects
        host = self.settings.host
        return [
            Endpoint("create", subjects.prov_create, CreateVm, self._create, queue="provisioner"),
            Endpoint("create-here", subjects.prov_create_on(host), CreateVm, self._create, queue=f"provisioner-{host}"),
            Endpoint("destroy", subjects.prov_destroy(host), DestroyVm, self._destroy, queue=f"provisioner-{host}"),
            Endpoint("drain", subjects.prov_drain(host), StartDrain, self._drain, queue=f"provisioner-{host}"),
            Endpoint("list", subjects.prov_list, ListVms, self._list, queue=f"provisioner-{host}"),
            *self._template_endpoints(),
        ]

    def _template_endpoints(self) -> list[Endpoint]:
        subjects, host = self.subjects, self.settings.host
        mine = f"provisioner-{host}"
        return [
            Endpoint("template-push", subjects.prov_template_push(host), PushTemplate, self._push, queue=mine),
            Endpoint("template-retire", subjects.prov_template_retire(host), RetireTemplate, self._retire, queue=mine),
            Endpoint(
                "template-protect", subjects.prov_template_protect(host), ProtectTemplate, self._protect, queue=mine
            ),
            Endpoint("template-list", subjects.prov_template_list, ListTemplates, self._list_templates, queue=mine),
        ]

    async def on_start(self) -> None:
        if self.metrics is not None:
            await self.metrics.start()
        loop = asyncio.get_running_loop()
        await self._connect(loop)
        await self._check_template()
        await self._reconcile()
        self._reconciled.set()
        self.spawn(self._consume_events(), "libvirt-events")
        self.spawn(self._reconcile_loop(), "reconcile")

    async def on_stop(self) -> None:
        await self.fleet.stop()
        await asyncio.to_thread(self.hv.close)
        await asyncio.to_thread(self.store.close)
        if self.metrics is not None:
            await self.metrics.close()

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> bool:
        def sink(event: DomainEvent) -> None:
            loop.call_soon_threadsafe(self._events.put_nowait, event)

        try:
            await asyncio.to_thread(self.hv.open, sink)
        except HypervisorError as error:
            log.error("libvirt.unreachable", uri=self.hv.describe(), error=str(error))
            return False
        return True

    async def _check_template(self) -> None:
        """A missing template is logged loudly at start; the service stays up and answers `unavailable`."""
        try:
            await asyncio.to_thread(self.hv.template, self.settings.template)
        except TemplateMissing as error:
            log.error("template.missing", template=self.settings.template, uri=self.hv.describe(), error=str(error))
        except HypervisorError as error:
            log.error("template.unreadable", template=self.settings.template, error=str(error))

    async def _publish(self, entry: VmEntry) -> None:
        if self.telemetry is not None:
            self.telemetry.observe(entry)
        await self.bus.publish(self.subjects.vm(entry.state), to_event(entry, self.settings.host))

    async def _after_first_reconcile(self) -> None:
        """Commands wait for the start-up reconcile, so request ids already in libvirt are known."""
        await self._reconciled.wait()

    async def _create(self, command: CreateVm) -> VmRecord:
        structlog.contextvars.bind_contextvars(vm_request=command.request_id, epoch=command.epoch)
        await self._after_first_reconcile()
        record = await answered(self.fleet.create(command))
        structlog.contextvars.bind_contextvars(vm=record.vm, state=record.state.value)
        return record

    async def _destroy(self, command: DestroyVm) -> VmRecord:
        structlog.contextvars.bind_contextvars(vm=command.vm, vm_request=command.request_id, epoch=command.epoch)
        await self._after_first_reconcile()
        return await answered(self.fleet.destroy(command))

    async def _drain(self, command: StartDrain) -> VmRecord:
        structlog.contextvars.bind_contextvars(vm=command.vm, vm_request=command.request_id, epoch=command.epoch)
        await self._after_first_reconcile()
        record = await answered(self.fleet.drain(command))
        structlog.contextvars.bind_contextvars(state=record.state.value)
        return record

    async def _list(self, _command: ListVms) -> VmList:
        await self._after_first_reconcile()
        result = await self.fleet.listing()
        structlog.contextvars.bind_contextvars(vms=len(result.vms))
        return result

    async def _announce(self, event: TemplateVersionReady | TemplateVersionRetired) -> None:
        ready = isinstance(event, TemplateVersionReady)
        await self.bus.publish(self.subjects.template_ready if ready else self.subjects.template_retired, event)

    def _template_epoch(self, epoch: int | None) -> None:
        """A template command from the leader carries its epoch: a deposed leader's is refused like a create."""
        if epoch is None:
            return
        try:
            self.fleet.check_epoch(epoch)
        except Refused as error:
            raise bus_error(error) from None

    async def _push(self, command: PushTemplate) -> HostTemplateVersion:
        structlog.contextvars.bind_contextvars(template_source=command.source, version=command.version)
        await self._after_first_reconcile()
        self._template_epoch(command.epoch)
        return await answered(self.templates.push(command))

    async def _retire(self, command: RetireTemplate) -> TemplateList:
        structlog.contextvars.bind_contextvars(version=command.version)
        await self._after_first_reconcile()
        self._template_epoch(command.epoch)
        return await answered(self.templates.retire(command))

    async def _protect(self, command: ProtectTemplate) -> HostTemplateVersion:
        structlog.contextvars.bind_contextvars(version=command.version, protected=command.protected)
        await self._after_first_reconcile()
        self._template_epoch(command.epoch)
        return await answered(self.templates.protect(command))

    async def _list_templates(self, _command: ListTemplates) -> TemplateList:
        return await answered(self.templates.listing())

    async def _consume_events(self) -> None:
        while True:
            event = await self._events.get()
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(vm=event.name, libvirt_event=event.kind.value)
            try:
                await self.fleet.on_domain_event(event)
            except Exception:  # one bad event must not stop event handling
                log.exception("libvirt.event_failed")

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reconcile_interval_s)
            await self._reconcile()

    async def _reconcile(self) -> None:
        """One reconcile; libvirt being unreachable is logged and retried next period."""
        structlog.contextvars.clear_contextvars()
        try:
            await self.fleet.reconcile()
        except Exception as error:  # noqa: BLE001 - the loop must outlive any one bad reconcile
            log.error("reconcile.failed", error=str(error) or type(error).__name__)
            return
        log.info("reconcile.done", vms=len(self.fleet.live()), template_versions=await self._versions_in_use())

    async def _versions_in_use(self) -> dict[str, int] | str:
        """Domains of this host on each template version (`(template)`: clones of the template domain itself), for
        the reconcile's log line; the error in words when libvirt cannot say."""
        try:
            listed = await self.templates.listing()
        except Exception as error:  # noqa: BLE001 - a report, never a reason to fail the reconcile
            return f"unread: {error or type(error).__name__}"
        return {v.version: v.in_use for v in listed.versions} | {"(template)": listed.unversioned_in_use}
