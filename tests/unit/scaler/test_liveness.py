"""Liveness: VMs the balancers agree are unhealthy are replaced, one at a time, and never in a fleet-wide fault."""

from __future__ import annotations

from dataclasses import replace

from services.scaler.core.liveness import choose, lost_hosts, observe, verdict
from services.scaler.core.model import BalancerView, CreateCommand, DestroyCommand, DrainCommand, DrainView, FleetState
from services.scaler.core.reconcile import reconcile
from shared.contract.events import VmState
from shared.contract.policy import ScalingPolicy
from tests.unit.scaler.fleets import NOW, fleet

POLICY = ScalingPolicy(unhealthy_replace_after_s=30, unhealthy_replace_interval_s=60)


def reporting(state: FleetState, sick: dict[str, set[str]], at: float = NOW) -> FleetState:
    """Each balancer in `sick` reports every VM of the fleet, and these as unroutable."""
    views = {b: BalancerView(id=b, last_seen=at, outstanding={n: 0 for n in state.vms}, unroutable=frozenset(vms))
             for b, vms in sick.items()}
    return replace(state, balancers=views)


def test_quorum_of_the_balancers_that_know_the_vm() -> None:
    """With quorum 1 every live balancer must agree; with 0.5 half of them is enough; a silent one has no say."""
    state = reporting(fleet(4, policy=POLICY), {"b1": {"vm1"}, "b2": set()})
    assert not verdict(state, "vm1", NOW)
    assert verdict(replace(state, policy=POLICY.model_copy(update={"unhealthy_quorum": 0.5})), "vm1", NOW)
    gone = dict(state.balancers)
    gone["b2"] = replace(gone["b2"], last_seen=NOW - 60)
    assert verdict(replace(state, balancers=gone), "vm1", NOW)


def test_a_sick_vm_is_replaced_after_the_window_create_first() -> None:
    """A VM unhealthy on every balancer is kept for `unhealthy_replace_after_s`, then a create and its destroy
    (no drain) go out in one evaluation, the create first."""
    state = reporting(fleet(4, policy=POLICY), {"b1": {"vm2"}, "b2": {"vm2"}})
    commands, state, note = reconcile(state, NOW)
    assert commands == () and "unhealthy: vm2" in note
    commands, state, note = reconcile(reporting(state, {"b1": {"vm2"}, "b2": {"vm2"}}, NOW + 30), NOW + 30)
    kinds = [type(c) for c in commands]
    assert kinds == [CreateCommand, DestroyCommand], note
    assert [c.vm for c in commands if isinstance(c, DestroyCommand)] == ["vm2"]
    assert not any(isinstance(c, DrainCommand) for c in commands)
    assert "replacing vm2" in note


def test_a_vm_that_recovers_is_forgotten() -> None:
    """A VM healthy again before the window ends starts from zero next time."""
    state = observe(reporting(fleet(4, policy=POLICY), {"b1": {"vm2"}}), NOW)
    assert state.sick_since == {"vm2": NOW}
    state = observe(reporting(state, {"b1": set()}, NOW + 10), NOW + 10)
    assert state.sick_since == {}


def test_replacements_are_rate_limited() -> None:
    """Two VMs sick at once are replaced one interval apart, the longest sick first."""
    state = replace(fleet(6, policy=POLICY), sick_since={"vm4": NOW - 40, "vm1": NOW - 50})
    state = reporting(state, {"b1": {"vm1", "vm4"}})
    first, _ = choose(state, NOW)
    assert first == "vm1"
    _, state, _ = reconcile(state, NOW)
    second, note = choose(reporting(state, {"b1": {"vm4"}}, NOW + 10), NOW + 10)
    assert second is None and "rate limit" in note
    second, _ = choose(reporting(state, {"b1": {"vm4"}}, NOW + 60), NOW + 60)
    assert second == "vm4"


def test_most_of_the_fleet_sick_at_once_is_held() -> None:
    """Above `unhealthy_hold_share` of the ready VMs sick, nothing is replaced and the note says why."""
    sick = {"vm0", "vm1", "vm2"}
    state = replace(reporting(fleet(4, policy=POLICY), {"b1": sick}), sick_since=dict.fromkeys(sick, NOW - 100))
    commands, _, note = reconcile(state, NOW)
    assert commands == ()
    assert "3 of 4 ready VMs unhealthy at once" in note


def test_zero_window_turns_replacement_off() -> None:
    """`unhealthy_replace_after_s=0` never replaces."""
    policy = POLICY.model_copy(update={"unhealthy_replace_after_s": 0})
    state = replace(reporting(fleet(4, policy=policy), {"b1": {"vm1"}}), sick_since={"vm1": NOW - 1000})
    assert choose(state, NOW) == (None, "")


def test_a_silent_host_is_written_off_and_its_vms_replaced_elsewhere() -> None:
    """A host silent far longer than another loses its VMs' count: creates make up for them at once, and no
    destroy is sent to it; when it answers again its VMs count, and the surplus is drained."""
    state = fleet(2, policy=POLICY, desired=2)
    state = replace(state, vms={**state.vms, "vm1": replace(state.vms["vm1"], host="h2")},
                    host_seen={"h1": NOW, "h2": NOW - 61}, hosts={"h1": 10})
    assert lost_hosts(state) == {"h2"}
    commands, state, note = reconcile(state, NOW)
    assert [type(c) for c in commands] == [CreateCommand] and "host h2 silent" in note
    assert not any(isinstance(c, DestroyCommand) for c in commands)
    back = replace(state, host_seen={"h1": NOW + 1, "h2": NOW + 1}, pending={},
                   vms={**state.vms, "vm2": replace(state.vms["vm0"], name="vm2")})
    commands, after, _ = reconcile(back, NOW + 1)
    drained = [c.vm for c in commands if isinstance(c, DrainCommand)]
    assert drained == ["vm1"], "three VMs for a desired two: the written-off one is drained (then destroyed)"
    assert not any(isinstance(c, CreateCommand) for c in commands)
    assert after.written_off == frozenset(), "the mark is spent once its host is back"


def test_the_written_off_vm_goes_first_even_when_it_is_older_idler_or_on_the_emptier_host() -> None:
    """When a lost host returns, its written-off VM is the surplus, whatever the usual scale-in order says."""
    state = fleet(3, policy=POLICY, desired=3)
    state = replace(state, vms={**state.vms, "vm2": replace(state.vms["vm2"], host="h2", created=NOW + 5)},
                    host_seen={"h1": NOW, "h2": NOW - 61}, hosts={"h1": 10})
    _, lost, _ = reconcile(state, NOW)
    assert lost.written_off == {"vm2"}
    back = replace(lost, host_seen={"h1": NOW + 1, "h2": NOW + 1}, pending={},
                   vms={**lost.vms, "vm3": replace(lost.vms["vm0"], name="vm3", created=NOW + 2)})
    commands, _, _ = reconcile(back, NOW + 1)
    assert [c.vm for c in commands if isinstance(c, DrainCommand)] == ["vm2"]


def test_every_host_silent_at_once_writes_nothing_off() -> None:
    """Silence from every host alike is the scaler's own trouble (NATS): nothing is written off."""
    state = replace(fleet(2, policy=POLICY), host_seen={"h1": NOW - 500, "h2": NOW - 500})
    assert lost_hosts(state) == frozenset()


def pausing(state: FleetState, *names: str) -> FleetState:
    """The VMs `names` reported paused in libvirt, the others not."""
    return replace(state, vms={n: replace(v, paused=n in names) for n, v in state.vms.items()})


def test_a_paused_vm_is_sick_without_any_balancer_verdict() -> None:
    """A ready VM libvirt reports paused is marked sick with no balancer reporting, and replaced after the window,
    the reason saying it is paused."""
    state = pausing(fleet(4, policy=POLICY), "vm3")
    commands, state, note = reconcile(state, NOW)
    assert commands == () and state.sick_since == {"vm3": NOW} and "unhealthy: vm3" in note
    commands, _, note = reconcile(state, NOW + 30)
    assert [type(c) for c in commands] == [CreateCommand, DestroyCommand]
    assert [c.vm for c in commands if isinstance(c, DestroyCommand)] == ["vm3"]
    assert "replacing vm3: paused in libvirt for 30 s" in note, note


def test_a_resumed_vm_is_forgotten_unless_the_balancers_still_call_it_unhealthy() -> None:
    """Resuming clears a paused VM's mark; while the balancers still agree it is unhealthy, the mark keeps its start."""
    state = observe(pausing(fleet(4, policy=POLICY), "vm1", "vm2"), NOW)
    assert state.sick_since == {"vm1": NOW, "vm2": NOW}
    state = observe(reporting(pausing(state), {"b1": {"vm2"}}, NOW + 10), NOW + 10)
    assert state.sick_since == {"vm2": NOW}
    _, note = choose(state, NOW + 30)
    assert note.startswith("replacing vm2: unhealthy on the balancers for 30 s"), note


def test_a_paused_draining_or_booting_vm_is_not_sick() -> None:
    """Only a ready VM that is not draining is marked sick for a pause: the others are on their way in or out."""
    state = pausing(fleet(3, policy=POLICY), "vm0", "vm1")
    state = replace(state, vms={**state.vms, "vm1": replace(state.vms["vm1"], state=VmState.BOOTING)},
                    drain_requests=frozenset(), drains={"vm0": DrainView("vm0", NOW, NOW + 60, frozenset())})
    assert observe(state, NOW).sick_since == {}


def test_paused_vms_count_towards_the_hold_share() -> None:
    """Paused and balancer-unhealthy VMs together above `unhealthy_hold_share` hold every replacement."""
    state = reporting(pausing(fleet(4, policy=POLICY), "vm0", "vm1"), {"b1": {"vm2"}})
    state = observe(state, NOW - 100)
    commands, _, note = reconcile(reporting(state, {"b1": {"vm2"}}), NOW)
    assert commands == ()
    assert "3 of 4 ready VMs unhealthy at once" in note
