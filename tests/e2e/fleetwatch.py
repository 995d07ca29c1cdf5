"""What the tests know about the fleet: the latest `fleet.vm.<state>` event of every VM."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from nats.errors import Error as NatsError

from shared.bus import Bus
from shared.contract.commands import GetStatus, ScaleFleet
from shared.contract.events import ScalingDecided, VmState, VmStateChanged
from shared.contract.provisioning import ListVms, VmList
from shared.contract.status import DesiredState, FleetStatus
from shared.errors import BusError
from tests.support import wait_until

TERMINAL = frozenset({VmState.DESTROYED, VmState.FAILED})

BOOT_TIMEOUT_S = 300.0
"""Clones under TCG on a loaded 2-core machine: ~15 s alone, much more three at a time."""


class FleetWatch:
    """Latest state and address per VM, from the provisioner's events."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.latest: dict[str, VmStateChanged] = {}
        self.history: list[VmStateChanged] = []
        self.late: list[VmStateChanged] = []
        self.arrived: list[tuple[float, VmStateChanged]] = []
        """Every event with the wall time it arrived here (for measured timings)."""
        self.decisions: list[tuple[float, ScalingDecided]] = []

    async def start(self) -> None:
        """Subscribe, then learn the VMs that exist already from the provisioner's list."""
        await self.bus.subscribe(self.bus.subjects.vm_all, VmStateChanged, self._on_event)
        await self.bus.subscribe(self.bus.subjects.scaler_decision, ScalingDecided, self._on_decision)
        for listing in await self.bus.gather(self.bus.subjects.prov_list, ListVms(), VmList, window=1.0):
            for record in listing.vms:
                if record.vm not in self.latest:
                    self.latest[record.vm] = VmStateChanged(vm=record.vm, state=record.state, address=record.address)

    async def _on_event(self, event: VmStateChanged, _msg: Any) -> None:
        """Destroyed and failed are final (names are never reused): a later event for the same
        VM is stale (e.g. a repeated drain) and is kept in `late`, not taken as its state."""
        self.history.append(event)
        self.arrived.append((time.time(), event))
        if self.ended(event.vm) and event.state not in TERMINAL:
            self.late.append(event)
            return
        self.latest[event.vm] = event

    async def _on_decision(self, decision: ScalingDecided, _msg: Any) -> None:
        self.decisions.append((time.time(), decision))

    def first(self, vm: str, state: VmState, after: float) -> float | None:
        """Wall time the first `state` event of `vm` arrived after `after`, or None."""
        return next((at for at, e in self.arrived if e.vm == vm and e.state is state and at >= after), None)

    def ready(self) -> dict[str, str]:
        """VM name -> address of every VM whose latest state is ready."""
        return {vm: e.address for vm, e in self.latest.items() if e.state == VmState.READY and e.address}

    def ended(self, vm: str) -> bool:
        event = self.latest.get(vm)
        return event is not None and event.state in TERMINAL

    async def scale(self, replicas: int) -> None:
        await self.bus.request(self.bus.subjects.cmd_scale, ScaleFleet(replicas=replicas), DesiredState, timeout=30)

    async def resync(self) -> None:
        """Take each VM's state from the provisioners' lists: after a NATS outage an event published
        meanwhile may never have reached us. A VM we hold ready or draining that no list has is gone."""
        lists = await self.bus.gather(self.bus.subjects.prov_list, ListVms(), VmList, window=1.0)
        if not lists:
            return
        listed = {record.vm: record for listing in lists for record in listing.vms}
        for vm, record in listed.items():
            if not self.ended(vm):
                self.latest[vm] = VmStateChanged(vm=vm, state=record.state, address=record.address,
                                                 request_id=record.request_id)
        for vm, event in list(self.latest.items()):
            if event.state in (VmState.READY, VmState.DRAINING) and vm not in listed:
                self.latest[vm] = VmStateChanged(vm=vm, state=VmState.DESTROYED, reason="in no provisioner's list")

    async def settle(self, replicas: int, timeout: float = BOOT_TIMEOUT_S, resync: bool = False) -> dict[str, str]:
        """Wait until exactly `replicas` VMs are ready and no other VM is on its way (with `resync`,
        checking the provisioners' lists every few seconds too, for events a NATS outage lost)."""
        last_resync = time.monotonic()

        async def settled() -> tuple[dict[str, str]] | None:
            nonlocal last_resync
            if resync and time.monotonic() - last_resync > 5.0:
                last_resync = time.monotonic()
                with contextlib.suppress(BusError, NatsError):
                    await self.resync()
            live = [e for e in self.latest.values() if e.state not in TERMINAL]
            ready = self.ready()
            return (ready,) if len(ready) == replicas and len(live) == replicas else None  # truthy even for 0 VMs

        try:
            (found,) = await wait_until(settled, timeout, interval=0.5, what=f"{replicas} ready VMs")
        except AssertionError as error:
            raise AssertionError(f"{error}; latest states: {self.describe()}") from None
        return dict(found)

    def describe(self) -> str:
        return ", ".join(f"{vm}={e.state.value}" for vm, e in sorted(self.latest.items()))


async def services_answer(bus: Bus, timeout: float = 180.0) -> None:
    """Wait until the scaler answers commands and the provisioner answers its list."""

    async def answering() -> bool:
        try:
            await bus.request(bus.subjects.cmd_status, GetStatus(), FleetStatus, timeout=5)
            return bool(await bus.gather(bus.subjects.prov_list, ListVms(), VmList, window=1.0))
        except BusError:
            await asyncio.sleep(0.5)
            return False

    await wait_until(answering, timeout, interval=0.5, what="scaler and provisioner answering")
