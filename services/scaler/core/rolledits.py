"""What each rollout command does to the stored rollout: pure functions, applied inside a revision-checked write.

Any replica takes the commands (like `edits` for the size and policy); the leader's `rollout.step`
then acts on the stored result. A refusal raises `BusError` with the code the caller sees.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from services.scaler.core.model import FleetState
from services.scaler.core.rollout import moved, when
from shared.contract.base import ErrorCode
from shared.contract.events import LIVE_STATES
from shared.contract.rollout import (
    AbortRollout,
    PauseRollout,
    RolloutPhase,
    RolloutSettings,
    RolloutState,
    StartRollout,
)
from shared.errors import BusError

Phase = RolloutPhase


def fleet_version(current: RolloutState | None, fleet: FleetState, versions: Mapping[str, str | None]) -> str | None:
    """The version the fleet runs: the last rollout's outcome, else most of its live VMs' (None: the domain)."""
    if current is not None and not current.active:
        return current.target
    seen = Counter(versions.get(vm.name) for vm in fleet.vms.values() if vm.state in LIVE_STATES)
    return seen.most_common(1)[0][0] if seen else None


def start(current: RolloutState | None, cmd: StartRollout, fleet: FleetState, versions: Mapping[str, str | None],
          now: float) -> RolloutState:
    """A new rollout to `cmd.version`; refused while one is active, or when the fleet already runs it all."""
    if current is not None and current.active:
        raise BusError(ErrorCode.CONFLICT, f"a rollout to {current.new_version} is {current.phase.value}: "
                                           "abort it or let it finish first")
    old = fleet_version(current, fleet, versions)
    others = [vm.name for vm in fleet.vms.values() if vm.state in LIVE_STATES and versions.get(vm.name) != cmd.version]
    if old == cmd.version and not others:
        raise BusError(ErrorCode.INVALID, f"the fleet already runs {cmd.version}")
    settings = RolloutSettings(**cmd.model_dump(include=set(RolloutSettings.model_fields)))
    phase = Phase.CANARY if settings.canary > 0 else Phase.ROLLING
    state = RolloutState(phase=phase, old_version=old, new_version=cmd.version, settings=settings)
    return moved(state, phase, now, None, started_at=when(now))


def pause(current: RolloutState | None, cmd: PauseRollout, now: float) -> RolloutState:
    """Start no new batch until resumed (a pause while paused changes nothing)."""
    rollout = _active(current)
    if rollout.phase is Phase.PAUSED:
        return rollout
    reason = f"paused: {cmd.reason}" if cmd.reason else "paused by command"
    return moved(rollout, Phase.PAUSED, now, reason, paused_phase=rollout.phase)


def resume(current: RolloutState | None, now: float) -> RolloutState:
    """Back to the phase the pause or checkpoint interrupted (a bake starts again)."""
    rollout = _active(current)
    if rollout.phase is not Phase.PAUSED:
        raise BusError(ErrorCode.CONFLICT, f"the rollout is {rollout.phase.value}, not paused")
    return moved(rollout, rollout.paused_phase or Phase.ROLLING, now, "resumed", paused_phase=None)


def abort(current: RolloutState | None, cmd: AbortRollout, now: float) -> RolloutState:
    """Roll back: the new version's VMs are replaced by the old version's."""
    rollout = _active(current)
    if rollout.phase is Phase.ROLLING_BACK:
        return rollout
    reason = f"rolling back: aborted ({cmd.reason})" if cmd.reason else "rolling back: aborted by command"
    return moved(rollout, Phase.ROLLING_BACK, now, reason, batch=[], paused_phase=None)


def _active(current: RolloutState | None) -> RolloutState:
    if current is None or not current.active:
        state = "no rollout was started" if current is None else f"the rollout is {current.phase.value}"
        raise BusError(ErrorCode.CONFLICT, f"{state}: nothing to change")
    return current
