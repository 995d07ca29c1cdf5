"""The template rollout's state machine: which VMs to replace now, and when to wait, go on or roll back.

Pure: `step(rollout, fleet, versions, now)` runs before each `decide` on the leader. It does not send
anything itself; it shapes what the reconciler does, so autoscaling, placement, the warm pool and the
drains keep working as they are during a rollout:

- a VM in the current *batch* is `retiring`: the reconciler does not count it, so it creates its
  successor at once, cloned from the rollout's target version (`stamp`); the retiring VM keeps
  serving until draining it leaves at least `min_healthy_share` of the desired size ready (1: only
  once its successor is ready, surge-first). The batch is at most `max_surge` VMs above the desired
  size, plus what the minimum healthy share lets go at once;
- every VM of another version is `outdated`: a scale-in takes those first;
- the old version's pooled VMs are destroyed at once (they serve nothing), so the pool refills from
  the target version before any running VM is replaced.

The canary batch (`canary` VMs) goes first; once ready it bakes for `bake_s`. At each checkpoint the
rollout pauses until resumed. The new version is compared with the old one throughout
(`rollcheck`), and a rollback replaces the new VMs by the old version the same way (no canary, no
checkpoints). Which VM runs which version comes from the provisioners' events (`versions`); a VM whose
version is not known yet is neither replaced nor taken for done.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from services.scaler.core.model import EN_ROUTE, Command, CreateCommand, DrainView, FleetState, VmView
from services.scaler.core.rollcheck import verdict
from shared.contract.events import LIVE_STATES, VmState
from shared.contract.rollout import RolloutPhase, RolloutState

Versions = Mapping[str, str | None]
Phase = RolloutPhase


@dataclass(frozen=True)
class Plan:
    """What the reconciler should do for the rollout in this evaluation (see the module's docstring)."""

    version: str | None = None
    retiring: frozenset[str] = frozenset()
    outdated: frozenset[str] = frozenset()
    drains: frozenset[str] = frozenset()
    discard: tuple[str, ...] = ()


@dataclass(frozen=True)
class Step:
    """The rollout's next state, the plan for this evaluation and a note for the decision's reason."""

    rollout: RolloutState
    plan: Plan
    note: str


def when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def moved(rollout: RolloutState, phase: Phase, now: float, reason: str | None, **more: object) -> RolloutState:
    """The rollout in a new phase since `now`, with its reason."""
    update = {"phase": phase, "phase_since": when(now), "reason": reason, **more}
    return rollout.model_copy(update=update)


def leaving(fleet: FleetState, vm: VmView) -> bool:
    """Draining, being destroyed, or asked to drain: on its way out."""
    return vm.state is VmState.DRAINING or vm.name in fleet.drains or vm.name in fleet.drain_requests


def serving(fleet: FleetState) -> list[VmView]:
    """VMs that serve, or will: capacity (the pool's aside) and not on their way out."""
    return [vm for vm in fleet.vms.values() if vm.capacity and not leaving(fleet, vm)]


def step(rollout: RolloutState, fleet: FleetState, versions: Versions, now: float) -> Step:
    """Advance the rollout by one evaluation."""
    if not rollout.active:
        return Step(rollout, Plan(version=rollout.target), f"rollout {_label(rollout)} {rollout.phase.value}")
    if rollout.phase is not Phase.ROLLING_BACK and (why := verdict(rollout, fleet, versions, now)) is not None:
        rollout = moved(rollout, Phase.ROLLING_BACK, now, f"rolling back: {why}", batch=[], paused_phase=None)
    target = rollout.target
    live = [n for n, vm in fleet.vms.items() if vm.state in LIVE_STATES]
    outdated = frozenset(n for n in live if n in versions and versions[n] != target)
    if not outdated and all(n in versions for n in live):  # a VM of no known version yet may be an old one
        done = Phase.ROLLED_BACK if rollout.phase is Phase.ROLLING_BACK else Phase.DONE
        finished = moved(rollout, done, now, _finished(rollout, done), batch=[], paused_phase=None)
        return Step(finished, Plan(version=target), f"rollout {_label(rollout)} {done.value}")
    ready_new = sum(vm.state is VmState.READY and versions.get(vm.name) == target for vm in serving(fleet))
    return _replace(rollout, fleet, outdated, now, ready_new)


def _replace(rollout: RolloutState, fleet: FleetState, outdated: frozenset[str], now: float, ready_new: int) -> Step:
    """Keep the batch moving, start the next one where the phase allows, and move the phase on."""
    if rollout.phase is Phase.BAKING and now - rollout.phase_since.timestamp() >= rollout.settings.bake_s:
        rollout = moved(rollout, Phase.ROLLING, now, f"canary baked {rollout.settings.bake_s:g} s: no worse than "
                                                     f"{_name(rollout.old_version)}")
    by_name = {vm.name: vm for vm in serving(fleet)}
    batch = [n for n in rollout.batch if n in outdated and n in by_name]
    discard = [n for n in batch if by_name[n].state is not VmState.READY]  # serves nothing yet: no drain needed
    discard += sorted(n for n in outdated if fleet.vms[n].in_pool and n not in fleet.drains)
    batch = [n for n in batch if n not in discard]
    floor = math.ceil(rollout.settings.min_healthy_share * fleet.desired - 1e-9)
    ready = sum(vm.state is VmState.READY for vm in by_name.values())
    drains = _drains(batch, ready, floor)
    ready -= len(drains)
    kept = [n for n in batch if n not in drains]
    room = max(0, rollout.settings.max_surge - len(kept)) + max(0, ready - floor)
    candidates = _candidates(fleet, by_name, outdated, set(batch))
    added = candidates[:min(room, _limit(rollout, fleet, len(candidates)))]
    more = _drains([vm.name for vm in added if vm.state is VmState.READY], ready, floor)
    discard += [vm.name for vm in added if vm.state is not VmState.READY]
    drains += more
    ready -= len(more)
    batch = kept + [vm.name for vm in added if vm.name not in more and vm.name not in discard]
    rollout = rollout.model_copy(update={"batch": batch, "replaced": rollout.replaced + len(added)})
    rollout = _advance(rollout, fleet, len(candidates) - len(added), now, ready_new)
    plan = Plan(version=rollout.target, retiring=frozenset(batch), outdated=outdated, drains=frozenset(drains),
                discard=tuple(discard))
    return Step(rollout, plan, _note(rollout, fleet, outdated, batch, drains, ready < floor + 1))


def _drains(batch: list[str], ready: int, floor: int) -> list[str]:
    """The batch's VMs that may stop serving now: each drain must leave `floor` VMs ready."""
    allowed = max(0, ready - floor)
    return batch[:allowed]


def _candidates(fleet: FleetState, by_name: Mapping[str, VmView], outdated: frozenset[str],
                batch: set[str]) -> list[VmView]:
    """Outdated serving VMs not in a batch yet: those not ready first (no capacity lost), then the oldest."""
    left = [vm for name, vm in by_name.items() if name in outdated and name not in batch]
    return sorted(left, key=lambda vm: (vm.state is VmState.READY, vm.created, vm.name))


def _limit(rollout: RolloutState, fleet: FleetState, candidates: int) -> int:
    """How many more VMs the phase lets into a batch: the canary's size, up to the next checkpoint, or all."""
    if rollout.phase is Phase.CANARY:
        return max(0, rollout.settings.canary - rollout.replaced)
    if rollout.phase is Phase.ROLLING_BACK:
        return candidates
    if rollout.phase is not Phase.ROLLING:
        return 0
    checkpoint = _next_checkpoint(rollout)
    if checkpoint is None:
        return candidates
    total = max(fleet.desired, 1)
    keep = total - math.ceil(checkpoint / 100 * total - 1e-9)
    return max(0, candidates - keep)


def _next_checkpoint(rollout: RolloutState) -> float | None:
    points = rollout.settings.checkpoints
    return points[rollout.checkpoints_passed] if rollout.checkpoints_passed < len(points) else None


def settled(fleet: FleetState, batch: list[str]) -> bool:
    """Nothing of the batch left and nothing on its way: every serving VM is ready, no create unanswered."""
    coming = any(vm.state in EN_ROUTE for vm in serving(fleet))
    return not batch and not coming and not fleet.pending


def _advance(rollout: RolloutState, fleet: FleetState, waiting: int, now: float, ready_new: int) -> RolloutState:
    """Move the phase on once the batch has settled: canary ready -> baking; a checkpoint reached -> paused.

    The canary bakes only once its VMs of the new version are ready (`ready_new`): a drain-first
    canary (healthy share < 1) leaves an empty batch and no create yet in the step that drains the old VM."""
    calm = settled(fleet, rollout.batch)
    if rollout.phase is Phase.CANARY and calm and ready_new >= min(rollout.replaced, rollout.settings.canary) \
            and (rollout.replaced >= rollout.settings.canary or not waiting):
        bake = rollout.settings.bake_s
        return moved(rollout, Phase.BAKING, now, f"canary of {rollout.replaced} on {rollout.new_version} ready: "
                                                  f"baking {bake:g} s beside {_name(rollout.old_version)}")
    checkpoint = _next_checkpoint(rollout)
    if rollout.phase is Phase.ROLLING and checkpoint is not None and calm and waiting > 0 \
            and _limit(rollout, fleet, waiting) == 0:
        reason = f"checkpoint {checkpoint:g}% reached: waiting for `quicfleet rollout resume`"
        return moved(rollout, Phase.PAUSED, now, reason, paused_phase=Phase.ROLLING,
                     checkpoints_passed=rollout.checkpoints_passed + 1)
    return rollout


def stamp(commands: tuple[Command, ...], version: str | None) -> tuple[Command, ...]:
    """Every create clones the rollout's target version (autoscaling and the pool included)."""
    return tuple(replace(c, version=version) if isinstance(c, CreateCommand) else c for c in commands)


def shaped(fleet: FleetState, plan: Plan) -> FleetState:
    """The fleet as the reconciler should see it: the batch retiring, the outdated first to go, drains asked.

    A discarded VM (pooled, or not serving yet) is destroyed without a drain, as the reconciler does for
    failed VMs: a drain already due.
    """
    due = {n: DrainView(vm=n, started=0.0, deadline=0.0, waiting=frozenset()) for n in plan.discard
           if n not in fleet.drains}
    return replace(fleet, retiring=plan.retiring, outdated=plan.outdated,
                   drain_requests=fleet.drain_requests | plan.drains, drains=dict(fleet.drains) | due)


def _label(rollout: RolloutState) -> str:
    return f"{_name(rollout.old_version)}->{rollout.new_version}"


def _name(version: str | None) -> str:
    return version or "the template domain"


def _finished(rollout: RolloutState, phase: Phase) -> str:
    if phase is Phase.DONE:
        return f"every VM runs {rollout.new_version}"
    return f"every VM runs {_name(rollout.old_version)} again ({rollout.reason or 'rolled back'})"


def _note(rollout: RolloutState, fleet: FleetState, outdated: frozenset[str], batch: list[str], drains: list[str],
          short: bool) -> str:
    """The rollout in one line for the decision's reason."""
    total = len(serving(fleet))
    on = total - len([n for n in outdated if n in {vm.name for vm in serving(fleet)}])
    text = f"rollout {_label(rollout)} {rollout.phase.value}: {on} of {total} on {_name(rollout.target)}"
    if batch:
        text += f"; replacing {', '.join(batch)}" + (" (waits for ready capacity)" if short else "")
    if drains:
        text += f"; draining {', '.join(drains)}"
    return f"{text}; {rollout.reason}" if rollout.reason else text
