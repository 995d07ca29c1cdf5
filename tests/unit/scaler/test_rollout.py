"""The rollout's pure core: batches, canary and bake, checkpoints, rollback, scale-in preference, commands."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.scaler.core import rolledits
from services.scaler.core.model import BalancerView, CreateCommand, DrainCommand, Failures, FleetState, VmView
from services.scaler.core.reconcile import reconcile
from services.scaler.core.rollcheck import counts, observe
from services.scaler.core.rollout import shaped, stamp, step, when
from shared.contract.base import ErrorCode
from shared.contract.events import VmState
from shared.contract.load import VmLoad
from shared.contract.rollout import (
    AbortRollout,
    PauseRollout,
    RolloutPhase,
    RolloutSettings,
    RolloutState,
    StartRollout,
)
from shared.errors import BusError
from tests.unit.scaler.fleets import NOW, fleet, vm

Phase = RolloutPhase


def rollout(phase: Phase = Phase.ROLLING, since: float = NOW, **settings: object) -> RolloutState:
    """A rollout v1 -> v2 in `phase` since `since`, started then too."""
    state = RolloutState(phase=phase, old_version="v1", new_version="v2", settings=RolloutSettings(**settings))
    return state.model_copy(update={"phase_since": when(since), "started_at": when(since)})


def versioned(old: int, new: int = 0, desired: int | None = None) -> tuple[FleetState, dict[str, str | None]]:
    """`old` ready VMs of v1 (vm0.. the oldest) and `new` ready VMs of v2 (n0..), desired old + new unless given."""
    state = fleet(old)
    news = {f"n{i}": vm(f"n{i}", created=100.0 + i) for i in range(new)}
    state = replace(state, vms=dict(state.vms) | news, desired=old + new if desired is None else desired)
    versions: dict[str, str | None] = {name: "v1" for name in state.vms}
    versions.update({name: "v2" for name in news})
    return state, versions


def test_the_canary_batch_replaces_one_vm_surge_first() -> None:
    """A canary of 1 at min healthy 1.0 retires the oldest v1 VM, keeps it serving, and its successor is a v2 create."""
    state, versions = versioned(4)
    result = step(rollout(Phase.CANARY, canary=1, max_surge=3), state, versions, NOW)
    assert result.plan.retiring == {"vm0"} and not result.plan.drains
    assert result.plan.outdated == {"vm0", "vm1", "vm2", "vm3"} and result.rollout.replaced == 1
    commands, _, _ = reconcile(shaped(state, result.plan), NOW)
    creates = stamp(commands, result.plan.version)
    assert [c for c in creates if isinstance(c, CreateCommand)] == [
        CreateCommand(request_id="scaler-e0-c1", host=None, version="v2")
    ]
    assert not any(isinstance(c, DrainCommand) for c in creates)


def test_a_drain_first_canary_bakes_only_once_its_new_vm_is_ready() -> None:
    """At min healthy 0.66 the canary's old VM drains before its successor exists: the phase stays canary until a
    v2 VM is ready, then bakes."""
    state, versions = versioned(3)
    first = step(rollout(Phase.CANARY, canary=1, max_surge=1, min_healthy_share=0.66), state, versions, NOW)
    assert first.plan.drains == {"vm0"} and first.rollout.phase is Phase.CANARY
    later, later_versions = versioned(2, 1, desired=3)
    later = replace(later, vms={n: v for n, v in later.vms.items() if n != "vm0"} | {
        "vm1": state.vms["vm1"], "vm2": state.vms["vm2"]})
    later_versions = {n: later_versions.get(n, "v1") for n in later.vms}
    baked = step(first.rollout, later, later_versions, NOW + 30)
    assert baked.rollout.phase is Phase.BAKING


def test_batches_stay_within_max_surge_at_full_healthy_share() -> None:
    """Rolling with max surge 2 and min healthy 1.0: two VMs retire at once and none drains before its successor."""
    state, versions = versioned(5)
    result = step(rollout(max_surge=2), state, versions, NOW)
    assert result.plan.retiring == {"vm0", "vm1"} and not result.plan.drains
    commands, _, _ = reconcile(shaped(state, result.plan), NOW)
    assert sum(isinstance(c, CreateCommand) for c in commands) == 2


def test_a_lower_healthy_share_lets_vms_drain_before_their_successors() -> None:
    """At min healthy 0.5 of 4 VMs, two may stop serving at once on top of the one surge VM kept serving."""
    state, versions = versioned(4)
    result = step(rollout(max_surge=1, min_healthy_share=0.5), state, versions, NOW)
    assert result.plan.drains == {"vm0", "vm1"} and result.plan.retiring == {"vm2"}
    assert result.rollout.batch == ["vm2"] and result.rollout.replaced == 3


def test_a_retiring_vm_drains_once_its_successor_is_ready() -> None:
    """The batch's VM is drained when the ready VMs exceed the healthy floor (its v2 successor is up)."""
    state, versions = versioned(3, 1, desired=3)
    without = replace(state, vms={k: v for k, v in state.vms.items() if k != "n0"})
    waiting = step(rollout().model_copy(update={"batch": ["vm0"]}), without, versions, NOW)
    assert waiting.plan.retiring == {"vm0"} and not waiting.plan.drains and "waits for ready capacity" in waiting.note
    result = step(rollout().model_copy(update={"batch": ["vm0"]}), state, versions, NOW)
    assert result.plan.drains == {"vm0"}
    commands, _, _ = reconcile(shaped(state, result.plan), NOW)
    assert [c.vm for c in commands if isinstance(c, DrainCommand)] == ["vm0"]


def test_the_canary_bakes_before_the_rest_and_no_batch_starts_meanwhile() -> None:
    """Canary done and settled: baking; within bake_s nothing more retires; after it the rollout rolls on."""
    state, versions = versioned(3, 1, desired=4)
    canary = rollout(Phase.CANARY, canary=1, bake_s=60).model_copy(update={"replaced": 1})
    baking = step(canary, state, versions, NOW).rollout
    assert baking.phase is Phase.BAKING and "baking 60 s" in (baking.reason or "")
    held = step(baking, state, versions, NOW + 59)
    assert held.rollout.phase is Phase.BAKING and not held.plan.retiring
    rolled = step(baking, state, versions, NOW + 60)
    assert rolled.rollout.phase is Phase.ROLLING and rolled.rollout.batch == ["vm0"]


def test_a_checkpoint_pauses_the_rollout_until_resumed() -> None:
    """With a 50% checkpoint, 2 of 4 on v2 and nothing in flight, the rollout pauses; a resume goes on."""
    state, versions = versioned(2, 2)
    limited = step(rollout(checkpoints=[50]), replace(state, vms={k: v for k, v in state.vms.items() if k != "n1"},
                                                      desired=3), versions, NOW)
    assert limited.rollout.batch == ["vm0"]  # ceil(50% of 3) = 2 VMs on v2 at the checkpoint: 1 there, 1 may go
    paused = step(rollout(checkpoints=[50]), state, versions, NOW).rollout
    assert paused.phase is Phase.PAUSED and paused.checkpoints_passed == 1 and "checkpoint 50%" in (paused.reason or "")
    assert not step(paused, state, versions, NOW + 1).plan.retiring
    resumed = rolledits.resume(paused, NOW + 2)
    assert resumed.phase is Phase.ROLLING and step(resumed, state, versions, NOW + 2).plan.retiring == {"vm0"}


def test_a_failed_vm_of_the_new_version_rolls_back_to_the_old() -> None:
    """A v2 VM that failed its readiness or identity check turns the rollout around: v2 VMs are now outdated."""
    state, versions = versioned(3, 2)
    state = replace(state, vms=dict(state.vms) | {"n0": replace(state.vms["n0"], state=VmState.FAILED)})
    result = step(rollout(), state, versions, NOW)
    assert result.rollout.phase is Phase.ROLLING_BACK and "n0 of v2 failed" in (result.rollout.reason or "")
    assert result.plan.version == "v1" and result.plan.outdated == {"n1"} and result.plan.retiring == {"n1"}


def test_repeated_create_failures_and_ejection_roll_back() -> None:
    """Three failed creates since the start, or a v2 VM unhealthy on the balancers for 5 s, roll back."""
    state, versions = versioned(3, 1)
    failing = replace(state, failures=Failures(count=3, last_at=NOW + 1))
    assert step(rollout(), failing, versions, NOW + 2).rollout.phase is Phase.ROLLING_BACK
    sick = replace(state, sick_since={"n0": NOW})
    assert step(rollout(), sick, versions, NOW + 4).rollout.phase is Phase.ROLLING
    assert "unhealthy on the balancers" in (step(rollout(), sick, versions, NOW + 5).rollout.reason or "")


@pytest.mark.parametrize(
    ("old", "new", "verdict"),
    [
        ((0.0, 0.01), (0.05, 0.01), "errors"),  # 5% 5xx against 0%
        ((0.0, 0.01), (0.0, 0.03), "p95"),  # p95 30 ms against 10 ms
        ((0.02, 0.01), (0.03, 0.012), None),  # within the margins of the old version's own figures
    ],
)
def test_versions_are_compared_with_each_other(old: tuple[float, float], new: tuple[float, float],
                                               verdict: str | None) -> None:
    """Error share and p95 of v2 against v1's over the same snapshots decide the rollback, not absolute numbers."""
    state, versions = versioned(3, 1)
    loads = [VmLoad(vm="vm1", rps=50, error_rate=old[0], p95_s=old[1]),
             VmLoad(vm="n0", rps=50, error_rate=new[0], p95_s=new[1])]
    watched = rollout(min_requests=100)
    watched = observe(watched, loads, 1.0, versions)
    assert step(watched, state, versions, NOW).rollout.phase is Phase.ROLLING  # 50 requests each: no verdict yet
    watched = observe(watched, loads, 2.0, versions)
    result = step(watched, state, versions, NOW).rollout
    if verdict is None:
        assert result.phase is Phase.ROLLING
    else:
        assert result.phase is Phase.ROLLING_BACK and verdict in (result.reason or "")


def test_rollback_replaces_new_vms_the_same_way_and_ends_rolled_back() -> None:
    """Rolling back retires v2 VMs surge-first with v1 creates; with no v2 VM left it is rolled back."""
    state, versions = versioned(2, 2)
    back = rollout(Phase.ROLLING_BACK, max_surge=1)
    result = step(back, state, versions, NOW)
    assert result.plan.retiring == {"n0"} and result.plan.version == "v1"
    only_old, old_versions = versioned(4)
    done = step(back, only_old, old_versions, NOW).rollout
    assert done.phase is Phase.ROLLED_BACK and done.target == "v1"
    only_new, new_versions = versioned(0, 3)
    assert step(rollout(), only_new, new_versions, NOW).rollout.phase is Phase.DONE


def test_old_pooled_vms_are_recycled_before_running_ones() -> None:
    """v1's pooled VMs are destroyed at once (no drain), in the same step as the canary's batch."""
    state, versions = versioned(2)
    pooled = VmView(name="p0", state=VmState.POOLED, since=0, created=0, host="h1")
    state = replace(state, vms=dict(state.vms) | {"p0": pooled})
    result = step(rollout(Phase.CANARY, canary=1), state, versions | {"p0": "v1"}, NOW)
    assert result.plan.discard == ("p0",)
    assert "p0" in shaped(state, result.plan).drains


def test_scale_in_during_a_rollout_takes_the_old_version_first() -> None:
    """Desired 4 -> 3 with two v1 and two v2 VMs: the reconciler drains a v1 VM even though v2 VMs are idler."""
    state, versions = versioned(2, 2, desired=3)
    busy = {"vm0": 5, "vm1": 5}
    state = replace(state, balancers={"b": BalancerView(id="b", last_seen=NOW, outstanding=busy)})
    paused = rollout(Phase.PAUSED)
    commands, _, _ = reconcile(shaped(state, step(paused, state, versions, NOW).plan), NOW)
    assert [c.vm for c in commands if isinstance(c, DrainCommand)] == ["vm0"]
    commands, _, _ = reconcile(state, NOW)
    assert [c.vm for c in commands if isinstance(c, DrainCommand)] == ["n0"]  # without the rollout: the idlest


def test_autoscaling_creates_clone_the_target_version() -> None:
    """Every create of a decision during (and after) a rollout carries the target version."""
    commands = (CreateCommand("a"), CreateCommand("b", "h1", pooled=True), DrainCommand("x", 30, "d"))
    stamped = stamp(commands, "v2")
    assert [getattr(c, "version", "-") for c in stamped] == ["v2", "v2", "-"]


def test_commands_start_pause_resume_abort() -> None:
    """Start from the fleet's version; a second start conflicts; pause, resume and abort move the phase."""
    state, versions = versioned(3)
    started = rolledits.start(None, StartRollout(version="v2", canary=1), state, versions, NOW)
    assert (started.phase, started.old_version, started.new_version) == (Phase.CANARY, "v1", "v2")
    with pytest.raises(BusError) as refused:
        rolledits.start(started, StartRollout(version="v3"), state, versions, NOW)
    assert refused.value.code is ErrorCode.CONFLICT
    with pytest.raises(BusError) as same:
        rolledits.start(None, StartRollout(version="v1"), state, versions, NOW)
    assert same.value.code is ErrorCode.INVALID
    paused = rolledits.pause(started, PauseRollout(reason="lunch"), NOW)
    assert paused.phase is Phase.PAUSED and paused.paused_phase is Phase.CANARY
    assert rolledits.resume(paused, NOW).phase is Phase.CANARY
    aborted = rolledits.abort(paused, AbortRollout(), NOW)
    assert aborted.phase is Phase.ROLLING_BACK and aborted.target == "v1"
    with pytest.raises(BusError):
        rolledits.resume(aborted, NOW)
    done = aborted.model_copy(update={"phase": Phase.ROLLED_BACK})
    again = rolledits.start(done, StartRollout(version="v2", canary=0), state, versions, NOW)
    assert again.phase is Phase.ROLLING and again.old_version == "v1"


def test_counts_per_version() -> None:
    """The status's per-version counts split ready, starting, pooled and leaving VMs."""
    state, versions = versioned(2, 1)
    state = replace(state, vms=dict(state.vms) | {"n0": replace(state.vms["n0"], state=VmState.BOOTING)},
                    drain_requests=frozenset({"vm1"}))
    rows = {c.version: (c.ready, c.starting, c.leaving) for c in counts(state, versions)}
    assert rows == {"v1": (1, 0, 1), "v2": (0, 1, 0)}


def test_a_vm_of_unknown_version_is_neither_replaced_nor_taken_for_done() -> None:
    """A VM whose version no event has said yet (a create's reply came first) is not retired, and keeps it from done."""
    state, versions = versioned(0, 2)
    fresh = vm("x0", state=VmState.REQUESTED, created=200.0)
    state = replace(state, vms=dict(state.vms) | {"x0": fresh})
    result = step(rollout(), state, versions, NOW)
    assert result.rollout.phase is Phase.ROLLING and not result.plan.retiring and not result.plan.outdated
    assert step(rollout(), state, versions | {"x0": "v2"}, NOW).rollout.phase is Phase.DONE
