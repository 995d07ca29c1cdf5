"""The template rollout's glue: its commands, its state in KV, and the hooks around the leader's evaluation.

Any replica answers `fleet.cmd.rollout.*` and stores the result in the scaler's bucket (key `rollout`,
revision-checked, like `desired`); the leader runs `core.rollout.step` before each `decide`, so the
reconciler and the existing actuator do the cloning and draining, and writes what moved back. A new
leader reads the key and goes on where the last one was; the provisioners' restart changes nothing,
as the rollout's state is neither theirs nor in memory. Which VM runs which version comes from the
`fleet.vm.*` events and the provisioners' lists.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import structlog
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from services.scaler.core import rolledits
from services.scaler.core.model import CreateCommand, Decision, FleetState
from services.scaler.core.rollcheck import counts, observe
from services.scaler.core.rollout import Plan, shaped, stamp, step
from services.scaler.guard import Spawn, TemplateGuard
from shared.bus import Bus
from shared.contract.base import ErrorCode
from shared.contract.events import VmState, VmStateChanged
from shared.contract.load import FleetLoaded
from shared.contract.provisioning import VmList
from shared.contract.rollout import (
    AbortRollout,
    GetRollout,
    PauseRollout,
    ResumeRollout,
    RolloutChanged,
    RolloutState,
    RolloutStatus,
    StartRollout,
)
from shared.endpoints import Endpoint
from shared.errors import BusError

log = structlog.get_logger("services.scaler.rollout")

ROLLOUT_KEY = "rollout"
ATTEMPTS = 5
RECHECK_S = 5.0
"""The stored rollout is read again at least this often (the safety net for a lost announcement)."""
VERSIONS_KEPT = 2000
"""VM versions remembered before those of VMs the fleet no longer has are dropped (destroyed ones go at once)."""
HEALTH_SAVE_S = 5.0
"""A rollout whose only change is its health sums is written at most this often (a new leader loses less)."""


class RolloutRunner:
    """One replica's copy of the rollout, its command handlers and the leader's hooks."""

    def __init__(self, bus: Bus, view: Callable[[], FleetState], leader: Callable[[], str | None],
                 leading: Callable[[], bool], wake: Callable[[], None], spawn: Spawn,
                 clock: Callable[[], float] = time.time) -> None:
        self.bus, self.view, self.leader, self.leading, self.wake = bus, view, leader, leading, wake
        self.clock = clock
        self.guard = TemplateGuard(bus, spawn, clock)
        self._kv: KeyValue | None = None
        self.note = ""
        """The active rollout's line for the decision's reason."""
        self.state: RolloutState | None = None
        self.revision = 0
        self.stale = True
        self.versions: dict[str, str | None] = {}
        """Each VM's template version, from its events and lists (pruned to the fleet's VMs)."""
        self._stored: RolloutState | None = None
        self._read_at = float("-inf")
        self._saved_at = float("-inf")
        self._announced: tuple[object, ...] | None = None
        self._load_at: float | None = None
        self._reports = -1
        self._plan = Plan()
        self._asked: dict[str, str | None] = {}
        """The version each create of ours asked for (request id -> version), until its VM is known."""

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise BusError(ErrorCode.UNAVAILABLE, "the scaler is still starting")
        return self._kv

    def attach(self, kv: KeyValue) -> None:
        """The scaler's bucket, once open (the endpoints are registered before it is)."""
        self._kv = kv

    def endpoints(self) -> list[Endpoint]:
        s = self.bus.subjects
        return [
            Endpoint("rollout_start", s.cmd_rollout_start, StartRollout, self.start),
            Endpoint("rollout_pause", s.cmd_rollout_pause, PauseRollout, self.pause),
            Endpoint("rollout_resume", s.cmd_rollout_resume, ResumeRollout, self.resume),
            Endpoint("rollout_abort", s.cmd_rollout_abort, AbortRollout, self.abort),
            Endpoint("rollout_status", s.cmd_rollout_status, GetRollout, self.status),
        ]

    async def subscribe(self) -> None:
        s = self.bus.subjects
        await self.bus.subscribe(s.scaler_rollout, RolloutChanged, self._on_changed)

    # --- news ---

    def vm_seen(self, event: VmStateChanged) -> None:
        """Each VM's version, from the service's one `fleet.vm.*` subscription (a second one would parse, and
        count as rejected, every bad event twice)."""
        if event.state is VmState.DESTROYED:
            self.versions.pop(event.vm, None)
        elif event.version is not None or event.vm not in self.versions:  # a drain's event may not repeat it
            self.versions[event.vm] = event.version

    async def _on_changed(self, event: RolloutChanged, _msg: Msg) -> None:
        """Another replica's change (or our own echo): read the key before the next step."""
        if self.state is None or event.phase is not self.state.phase or event.batch != self.state.batch:
            self.stale = True
            self.wake()

    def on_lists(self, lists: list[VmList]) -> None:
        """The provisioners' lists: the version of every VM they hold."""
        for listing in lists:
            self.versions.update({record.vm: record.version for record in listing.vms})

    def on_load(self, snapshot: FleetLoaded, now: float) -> None:
        """The leader adds each new snapshot's traffic to the per-version sums (`rollcheck.observe`)."""
        last, self._load_at = self._load_at, now
        if snapshot.reports == self._reports or self.state is None or not self.state.active:
            return
        self._reports = snapshot.reports
        seconds = min(now - last, snapshot.window_s) if last is not None else 0.0
        self.state = observe(self.state, snapshot.vms, seconds, self.versions)

    # --- the leader's evaluation ---

    async def sync(self, leading: bool = False) -> None:
        """Read the stored rollout when our copy may be old.

        The leader's own writes keep its copy (and the health sums it adds between writes) current, and
        another replica's change is announced or refuses the leader's next write; a follower also reads
        it every `RECHECK_S`, in case an announcement was lost.
        """
        if self.stale or (not leading and self.clock() - self._read_at >= RECHECK_S):
            await self.refresh()

    def shape(self, fleet: FleetState, now: float) -> FleetState:
        """Step the rollout and shape the fleet the reconciler sees (called under the service's lock)."""
        if len(self.versions) > VERSIONS_KEPT:  # an event may come before the fleet knows its VM: prune rarely
            self.versions = {name: v for name, v in self.versions.items() if name in fleet.vms}
        for vm in fleet.vms.values():  # the create's reply may come before the VM's first event
            if vm.name not in self.versions and vm.request_id in self._asked:
                self.versions[vm.name] = self._asked[vm.request_id]
        self._asked = {rid: v for rid, v in self._asked.items() if rid in fleet.pending or rid in fleet.pool_pending}
        if self.state is None:
            self._plan = Plan()
        else:
            moved = step(self.state, fleet, self.versions, now)
            self.state, self._plan = moved.rollout, moved.plan
            if moved.rollout.active:
                self.note = moved.note
        return shaped(fleet, self._plan)

    def finish(self, decision: Decision) -> Decision:
        """Creates clone the target version; an active rollout's line opens the decision's reason (which is cut
        at 500 characters in `ScalingDecided`: the rollback's reason must survive that)."""
        if self.state is None:
            return decision
        commands = stamp(decision.commands, self._plan.version)
        self._asked.update({c.request_id: c.version for c in commands if isinstance(c, CreateCommand)})
        reason = f"{self.note}; {decision.reason}" if self.state.active and self.note else decision.reason
        return replace(decision, commands=commands, reason=reason)

    async def save(self, fleet: FleetState) -> None:
        """Store what the step moved (health alone at most every `HEALTH_SAVE_S`), then announce it."""
        state = self.state
        if state is None:
            return
        if _shape(state) != _shape(self._stored) or (
                state.health != (self._stored.health if self._stored else []) and
                self.clock() - self._saved_at >= HEALTH_SAVE_S):
            try:
                written = await self._write(state)
            except (NatsError, TimeoutError) as error:  # the commands still go out; the next step writes again
                log.warning("rollout.save_failed", error=str(error) or type(error).__name__)
                return
            if not written:
                log.info("rollout.superseded", phase=state.phase.value)
                return
            self._saved_at = self.clock()
        await self.announce(fleet)
        self.guard.keep(self.state, fleet.hosts)

    async def announce(self, fleet: FleetState) -> None:
        """Publish `RolloutChanged` when the phase, the batch, the reason or the counts moved."""
        state = self.state
        if state is None:
            return
        versions = counts(fleet, self.versions)
        key = (*_shape(state), tuple(versions) if state.active else ())  # once over, only a new phase is news
        if key == self._announced:
            return
        self._announced = key
        event = RolloutChanged(phase=state.phase, old_version=state.old_version, new_version=state.new_version,
                               versions=versions, batch=state.batch, reason=state.reason, leader=self.leader())
        await self.bus.publish(self.bus.subjects.scaler_rollout, event)
        log.info("rollout.changed", phase=state.phase.value, batch=state.batch, reason=state.reason)

    # --- commands (any replica) ---

    async def start(self, cmd: StartRollout) -> RolloutStatus:
        return await self._change(lambda r: rolledits.start(r, cmd, self.view(), self.versions, self.clock()))

    async def pause(self, cmd: PauseRollout) -> RolloutStatus:
        return await self._change(lambda r: rolledits.pause(r, cmd, self.clock()))

    async def resume(self, _cmd: ResumeRollout) -> RolloutStatus:
        return await self._change(lambda r: rolledits.resume(r, self.clock()))

    async def abort(self, cmd: AbortRollout) -> RolloutStatus:
        return await self._change(lambda r: rolledits.abort(r, cmd, self.clock()))

    async def status(self, _cmd: GetRollout) -> RolloutStatus:
        await self.sync(self.leading())
        return self.reply()

    def reply(self) -> RolloutStatus:
        return RolloutStatus(rollout=self.state, versions=counts(self.view(), self.versions), leader=self.leader())

    async def _change(self, edit: Callable[[RolloutState | None], RolloutState]) -> RolloutStatus:
        """Apply `edit` to the freshly read rollout and store it revision-checked (again on a race)."""
        for _ in range(ATTEMPTS):
            await self.refresh()
            state = edit(self._stored)
            if await self._write(state):
                await self.announce(self.view())
                self.wake()
                return self.reply()
        raise BusError(ErrorCode.CONFLICT, "the rollout kept changing under this command; try again")

    # --- the key ---

    async def refresh(self) -> None:
        try:
            entry = await self.kv.get(ROLLOUT_KEY)
        except KeyNotFoundError:
            self.state, self._stored, self.revision = None, None, 0
        else:
            try:
                stored = RolloutState.model_validate_json(entry.value or b"")
                self.state, self._stored = stored, stored
            except ValidationError:
                log.error("rollout.corrupt_value", revision=entry.revision)
            self.revision = entry.revision or 0
        self.stale, self._read_at = False, self.clock()

    async def _write(self, state: RolloutState) -> bool:
        data = state.model_dump_json().encode()
        try:
            if self.revision == 0:
                self.revision = await self.kv.create(ROLLOUT_KEY, data)
            else:
                self.revision = await self.kv.update(ROLLOUT_KEY, data, last=self.revision)
        except KeyWrongLastSequenceError:
            self.stale = True
            return False
        except BaseException:
            self.stale = True
            raise
        self.state, self._stored, self._read_at = state, state, self.clock()
        return True


def _shape(state: RolloutState | None) -> tuple[object, ...]:
    """What makes a rollout worth storing and announcing at once (the health sums aside)."""
    if state is None:
        return ()
    return (state.phase, state.new_version, tuple(state.batch), state.reason, state.replaced,
            state.checkpoints_passed, state.phase_since)
