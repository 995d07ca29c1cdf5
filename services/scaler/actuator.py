"""Sends the core's commands over NATS and feeds the answers back; the leader's only hands.

Each command runs as its own task so a slow provisioner never delays the next evaluation.
Every request carries the leader's epoch: a provisioner that has seen a newer leader refuses
it (`conflict`), which fences a deposed leader that has not noticed yet. A drain is a command to
a provisioner too (`StartDrain`): the provisioner is the one writer of VM state, and its
`fleet.vm.draining` is what the balancers drain on; the scaler publishes no `fleet.vm.*` event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import structlog
from nats.errors import Error as NatsError

from services.scaler.core.model import Command, CreateCommand, DestroyCommand, DrainCommand, FleetState
from shared.bus import Bus
from shared.contract.base import ErrorCode
from shared.contract.provisioning import CreateVm, DestroyVm, StartDrain, VmRecord
from shared.errors import BusError, NoResponders
from shared.logging import bind_message
from shared.throttle import LineThrottle

log = structlog.get_logger("services.scaler.actuator")
NO_PROVISIONER = LineThrottle(burst=1, period_s=30.0)
"""A create nobody listened for is retried every evaluation; one line per 30 s says so."""
DRAIN_REFUSED = LineThrottle(burst=1, period_s=30.0)
"""A drain the provisioner did not take is asked again every evaluation; one line per VM per 30 s says so."""


class Feedback(Protocol):
    """What the service does with the outcome of a command."""

    def created(self, request_id: str, record: VmRecord | None) -> None: ...

    def create_failed(self, request_id: str, counted: bool = True) -> None: ...

    def drain_failed(self, vm: str) -> None: ...

    async def destroyed(self, vm: str) -> None: ...


class Actuator:
    """Turns `CreateCommand`, `DrainCommand` and `DestroyCommand` into NATS traffic."""

    def __init__(
        self, bus: Bus, feedback: Feedback, spawn: Callable[[Coroutine[Any, Any, None], str], object],
        timeout_s: float,
    ) -> None:
        self.bus, self.feedback, self.spawn, self.timeout_s = bus, feedback, spawn, timeout_s

    def send(self, commands: tuple[Command, ...], fleet: FleetState) -> None:
        """Start every command; each logs its own outcome."""
        for command in commands:
            if isinstance(command, CreateCommand):
                self.spawn(self._create(command, fleet.epoch), f"create-{command.request_id}")
            elif isinstance(command, DrainCommand):
                self.spawn(self._drain(command, fleet.epoch), f"drain-{command.vm}")
            else:
                self.spawn(self._destroy(command, fleet.epoch), f"destroy-{command.vm}")

    async def _create(self, command: CreateCommand, epoch: int) -> None:
        bind_message(command="create", request_id=command.request_id, epoch=epoch, host=command.host,
                     pooled=command.pooled)
        request = CreateVm(request_id=command.request_id, epoch=epoch, pooled=command.pooled, version=command.version)
        subjects = self.bus.subjects
        subject = subjects.prov_create_on(command.host) if command.host else subjects.prov_create
        try:
            record = await self.bus.request(subject, request, VmRecord, self.timeout_s)
        except NoResponders as error:
            # Nobody got it (at cold start the leader is often up before any provisioner): no
            # failure to back off from; the next evaluation sends it again.
            if NO_PROVISIONER.admit(subject, time.monotonic()) is not None:
                log.info("scaler.no_provisioner", subject=subject, error=error.message)
            self.feedback.create_failed(command.request_id, counted=False)
            return
        except BusError as error:
            log.warning("scaler.create_failed", code=error.code.value, error=error.message)
            self.feedback.create_failed(command.request_id)
            return
        log.info("scaler.create_sent", vm=record.vm)
        self.feedback.created(command.request_id, record)

    async def _drain(self, command: DrainCommand, epoch: int) -> None:
        """Ask the VM's provisioner to drain it; one that does not take it is asked again next reconcile."""
        bind_message(command="drain", vm=command.vm, host=command.host, request_id=command.request_id, epoch=epoch)
        request = StartDrain(vm=command.vm, request_id=command.request_id, epoch=epoch, deadline_s=command.deadline_s)
        try:
            if command.host is None:
                raise ValueError("no provisioner is known for this VM yet")
            subject = self.bus.subjects.prov_drain(command.host)
            record = await self.bus.request(subject, request, VmRecord, self.timeout_s)
        except (BusError, NatsError, TimeoutError, ValueError) as error:
            if DRAIN_REFUSED.admit(command.vm, time.monotonic()) is not None:
                code = error.code.value if isinstance(error, BusError) else type(error).__name__
                log.warning("scaler.drain_failed", code=code, error=str(error) or type(error).__name__)
            self.feedback.drain_failed(command.vm)
            return
        log.info("scaler.drain_sent", deadline_s=command.deadline_s, state=record.state.value)

    async def _destroy(self, command: DestroyCommand, epoch: int) -> None:
        bind_message(command="destroy", vm=command.vm, host=command.host, request_id=command.request_id)
        request = DestroyVm(vm=command.vm, request_id=command.request_id, epoch=epoch)
        try:
            subject = self.bus.subjects.prov_destroy(command.host)
            await self.bus.request(subject, request, VmRecord, self.timeout_s)
        except BusError as error:
            if error.code is not ErrorCode.NOT_FOUND:
                log.warning("scaler.destroy_failed", code=error.code.value, error=error.message)
                return
            log.info("scaler.destroy_not_found")
        except ValueError:
            log.warning("scaler.destroy_bad_host")
            return
        log.info("scaler.destroyed")
        await self.feedback.destroyed(command.vm)
