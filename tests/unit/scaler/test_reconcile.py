"""Reconcile: creates and drains towards the desired size, victim choice, drain completion, backoff."""

from __future__ import annotations

from dataclasses import replace

from services.scaler.core.model import BalancerView, CreateCommand, DestroyCommand, DrainCommand, Failures
from services.scaler.core.reconcile import drain_failed, reconcile
from services.scaler.core.track import forget, on_create_failed, on_created, on_drained, on_vm_event
from shared.contract.draining import BackendDrained
from shared.contract.events import VmState, VmStateChanged
from shared.contract.policy import ScalingPolicy
from tests.unit.scaler.fleets import NOW, fleet, vm


def _balancers(*reports: tuple[str, dict[str, int]]) -> dict[str, BalancerView]:
    return {b: BalancerView(id=b, last_seen=NOW, outstanding=out) for b, out in reports}


def test_scale_in_drains_the_idlest_vm_oldest_first_on_ties() -> None:
    """The victim is the VM with the fewest outstanding requests; among equals the oldest goes."""
    state = fleet(4, desired=2, balancers=_balancers(("b1", {"vm0": 5, "vm1": 0, "vm2": 3, "vm3": 0})))
    commands, state, _ = reconcile(state, NOW)
    assert [c.vm for c in commands if isinstance(c, DrainCommand)] == ["vm1", "vm3"]
    assert set(state.drains) == {"vm1", "vm3"}


def test_a_drain_goes_to_the_vms_own_provisioner_with_the_policy_deadline() -> None:
    """Each drain command names the host that owns the VM and the policy's drain timeout."""
    state = fleet(2, desired=1, policy=ScalingPolicy(drain_timeout_s=12))
    commands, _, _ = reconcile(state, NOW)
    assert [(c.vm, c.host, c.deadline_s) for c in commands if isinstance(c, DrainCommand)] == [("vm0", "h1", 12)]


def test_a_drain_the_provisioner_did_not_take_is_asked_again_and_never_destroyed_at_its_deadline() -> None:
    """After a failed `StartDrain` the VM is no longer draining: the next reconcile drains it again (a new
    request id), and no destroy goes out at the first drain's deadline."""
    state = fleet(2, desired=1, policy=ScalingPolicy(drain_timeout_s=30), balancers=_balancers(("b1", {})))
    first, state, _ = reconcile(state, NOW)
    state = drain_failed(state, "vm0")
    state = replace(state, balancers={"b1": BalancerView(id="b1", last_seen=NOW + 31)})
    again, state, _ = reconcile(state, NOW + 31)
    (before,), (after,) = first, again
    assert isinstance(before, DrainCommand) and isinstance(after, DrainCommand), "a drain again, no destroy"
    assert after.vm == before.vm == "vm0" and after.request_id != before.request_id
    assert state.drains["vm0"].deadline == NOW + 61


def test_a_failed_drain_reply_leaves_a_destroy_already_sent_alone() -> None:
    """A drain whose destroy is out (no balancer to wait for) stays: the late failure does not bring the VM back."""
    state = fleet(2, desired=1)
    commands, state, _ = reconcile(state, NOW)
    assert any(isinstance(c, DestroyCommand) for c in commands)
    assert drain_failed(state, "vm0") == state


def test_outstanding_is_summed_over_live_balancers_only() -> None:
    """A silent balancer's stale counts do not protect a busy VM from being chosen."""
    balancers = _balancers(("b1", {"vm0": 1, "vm1": 2}))
    balancers["old"] = BalancerView(id="old", last_seen=NOW - 60, outstanding={"vm1": 0, "vm0": 50})
    state = fleet(2, desired=1, balancers=balancers)
    commands, _, _ = reconcile(state, NOW)
    assert [c.vm for c in commands if isinstance(c, DrainCommand)] == ["vm0"]


def test_destroy_waits_for_every_live_balancer() -> None:
    """A drained VM is destroyed only after each live balancer reports it drained."""
    state = fleet(2, desired=1, balancers=_balancers(("b1", {}), ("b2", {})))
    _, state, _ = reconcile(state, NOW)
    state = on_drained(state, BackendDrained(vm="vm0", balancer="b1"))
    commands, state, _ = reconcile(state, NOW + 1)
    assert not any(isinstance(c, DestroyCommand) for c in commands)
    state = on_drained(state, BackendDrained(vm="vm0", balancer="b2"))
    commands, state, _ = reconcile(state, NOW + 2)
    assert [(c.vm, c.host) for c in commands if isinstance(c, DestroyCommand)] == [("vm0", "h1")]


def test_destroy_after_the_drain_deadline() -> None:
    """A balancer that never reports does not keep a VM alive past the drain deadline."""
    state = fleet(2, desired=1, policy=ScalingPolicy(drain_timeout_s=30), balancers=_balancers(("b1", {})))
    _, state, _ = reconcile(state, NOW)
    state = replace(state, balancers={"b1": BalancerView(id="b1", last_seen=NOW + 29)})
    commands, state, _ = reconcile(state, NOW + 29)
    assert not any(isinstance(c, DestroyCommand) for c in commands)
    commands, _, _ = reconcile(state, NOW + 30)
    assert any(isinstance(c, DestroyCommand) for c in commands)


def test_no_balancers_means_destroy_at_once() -> None:
    """With no live balancer there is nothing to wait for: drain and destroy go out together."""
    commands, _, _ = reconcile(fleet(2, desired=1), NOW)
    assert [type(c) for c in commands] == [DrainCommand, DestroyCommand]


def test_commanded_drain_removes_that_vm_even_when_the_size_matches() -> None:
    """A VM named by `fleet.cmd.drain` is drained, and the rest are not touched."""
    state = fleet(3, desired=2, drain_requests=frozenset({"vm2"}), balancers=_balancers(("b1", {})))
    commands, _, _ = reconcile(state, NOW)
    assert [c.vm for c in commands if isinstance(c, DrainCommand)] == ["vm2"]
    assert not any(isinstance(c, CreateCommand) for c in commands)


def test_failed_vm_is_destroyed_and_replaced_with_backoff() -> None:
    """A failed VM is destroyed, a replacement waits failure_backoff_s, and repeated failures wait longer."""
    policy = ScalingPolicy(failure_backoff_s=5, failure_backoff_max_s=60)
    state = fleet(2, desired=2, policy=policy)
    state = on_vm_event(state, VmStateChanged(vm="vm1", state=VmState.FAILED, host="h1"), NOW)
    commands, state, note = reconcile(state, NOW)
    assert [type(c) for c in commands] == [DestroyCommand] and "backing off" in note
    commands, state, _ = reconcile(state, NOW + 5)
    assert [type(c) for c in commands] == [CreateCommand]
    state = replace(forget(state, "vm1"), pending={}, failures=Failures(count=3, last_at=NOW + 10))
    assert reconcile(state, NOW + 29)[0] == ()
    assert [type(c) for c in reconcile(state, NOW + 30)[0]] == [CreateCommand]


def test_after_failures_creates_go_one_at_a_time() -> None:
    """While failures are recent, only one create is in flight, so a broken template is probed, not flooded."""
    state = fleet(0, desired=3, failures=Failures(count=1, last_at=NOW - 100))
    commands, state, _ = reconcile(state, NOW)
    assert len(commands) == 1
    assert reconcile(state, NOW + 1)[0] == ()


def test_orphan_draining_vm_from_a_previous_leader_is_adopted() -> None:
    """A VM left draining by a deposed leader is drained again and destroyed, not leaked."""
    state = fleet(2, desired=1)
    state = replace(state, vms=dict(state.vms) | {"vm1": vm("vm1", VmState.DRAINING)})
    commands, _, _ = reconcile(state, NOW)
    assert ("vm1", DestroyCommand) in [(c.vm, type(c)) for c in commands if not isinstance(c, CreateCommand)]


def _creates(commands: tuple[object, ...]) -> list[str | None]:
    return [c.host for c in commands if isinstance(c, CreateCommand)]


def test_creates_go_to_the_hosts_with_most_room() -> None:
    """With hosts known, each create goes where most places are free: h1 holds 2 of 4, h2 none of 3."""
    state = fleet(2, desired=6, hosts={"h1": 4, "h2": 3})
    commands, state, note = reconcile(state, NOW)
    assert sorted(_creates(commands), key=str) == ["h1", "h1", "h2", "h2"] and note == "creating 4"
    assert sorted(state.placed.values()) == ["h1", "h1", "h2", "h2"]


def test_no_create_goes_to_a_full_host_and_a_full_fleet_waits_without_failing() -> None:
    """Past every host's max_vms no create is sent (nothing counts as failed); pending placements take room."""
    state = fleet(2, desired=5, hosts={"h1": 2, "h2": 2})
    commands, state, note = reconcile(state, NOW)
    assert _creates(commands) == ["h2", "h2"] and note == "creating 2; every host is at its max_vms"
    again, state, note = reconcile(state, NOW + 1)
    assert _creates(again) == [] and state.failures.count == 0


def test_without_known_hosts_creates_go_to_any_provisioner() -> None:
    """No provisioner has said its max_vms (older ones, or no list yet): creates carry no host."""
    commands, _, _ = reconcile(fleet(1, desired=3), NOW)
    assert _creates(commands) == [None, None]


def test_a_settled_or_failed_create_frees_its_placement() -> None:
    """The create's reply, or its failure, removes its placement, so the room it held is counted once."""
    commands, state, _ = reconcile(fleet(0, desired=2, hosts={"h1": 5}), NOW)
    first, second = (c.request_id for c in commands if isinstance(c, CreateCommand))
    state = on_create_failed(state, first, NOW)
    state = on_created(state, second, None, NOW)
    assert state.placed == {} and state.pending == {}
