"""Placement by what a host has (memory, then CPU overcommit, VMs, name) and scale-in that keeps hosts even."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from services.scaler.core.model import BalancerView, CreateCommand, FleetState, HostCapacity, VmView
from services.scaler.core.placement import ALL_FULL, place
from services.scaler.core.reconcile import pick_victims, reconcile
from shared.contract.events import VmState
from shared.contract.policy import ScalingPolicy
from tests.unit.scaler.fleets import NOW, vm


def cap(free: int | None, cpus: int | None = None, vcpus: int = 1, size: int = 256,
        running: tuple[str, ...] = ()) -> HostCapacity:
    """A host's report: `free` MiB free, `cpus`, one VM of `size` MiB and `vcpus`, these VMs running."""
    return HostCapacity(free_memory_mib=free, cpus=cpus, vm_memory_mib=size, vm_vcpus=vcpus, running=frozenset(running))


def on(host: str, *names: str, state: VmState = VmState.READY) -> dict[str, VmView]:
    """VMs on `host`, created in the order given."""
    return {name: replace(vm(name, state, created=float(i)), host=host) for i, name in enumerate(names)}


@dataclass(frozen=True)
class Case:
    """One placement: the hosts (max_vms), what each reports, our VMs there, how many creates; the expected answer."""

    hosts: dict[str, int]
    capacity: dict[str, HostCapacity]
    count: int
    placed: list[str | None]
    note: str = ""
    vms: dict[str, VmView] = field(default_factory=dict)
    pending_on: dict[str, str] = field(default_factory=dict)
    host_seen: dict[str, float] = field(default_factory=dict)

    def state(self) -> FleetState:
        return FleetState(
            desired=0, policy=ScalingPolicy(), hosts=self.hosts, capacity=self.capacity, vms=self.vms,
            pending=dict.fromkeys(self.pending_on, NOW), placed=self.pending_on, host_seen=self.host_seen,
        )


TEN = {"h1": 10, "h2": 10}
PLACEMENTS = {
    "the host where more VMs fit in memory takes them": Case(
        TEN, {"h1": cap(4096), "h2": cap(1024)}, 3, ["h1", "h1", "h1"]),
    "a host too small for one VM gets none, and the note says why per host": Case(
        TEN, {"h1": cap(200), "h2": cap(1024)}, 5, ["h2"] * 4,
        "no host has room: h1 has 200 MiB free < one VM of 256 MiB, "
        "h2 has 1.0 GiB free < 5 VMs of 256 MiB (4 not running yet)"),
    "max_vms caps what memory would allow": Case(
        {"h1": 2, "h2": 10}, {"h1": cap(10240), "h2": cap(2048)}, 3, ["h2", "h2", "h2"]),
    "less CPU overcommit breaks a memory tie, and memory still comes first": Case(
        TEN, {"h1": cap(1024, cpus=4, vcpus=2), "h2": cap(1024, cpus=16, vcpus=2)}, 2, ["h2", "h1"]),
    "fewer VMs break an overcommit tie": Case(
        TEN, {"h1": cap(1024, running=("a", "b")), "h2": cap(1024)}, 1, ["h2"], vms=on("h1", "a", "b")),
    "the name breaks the last tie": Case(TEN, {"h1": cap(1024), "h2": cap(1024)}, 1, ["h1"]),
    "VMs not running when the host listed, and pending creates, take its memory": Case(
        TEN, {"h1": cap(1024, running=("a",)), "h2": cap(768)}, 3, ["h2", "h2", "h1"],
        vms=on("h1", "a", "b"), pending_on={"r1": "h1"}),
    "a lost host gets none, however much it has": Case(
        TEN, {"h1": cap(512), "h2": cap(65536)}, 3, ["h1", "h1"],
        "no host has room: h1 has 512 MiB free < 3 VMs of 256 MiB (2 not running yet)",
        host_seen={"h1": NOW, "h2": NOW - 61}),
    "hosts without figures are placed on by count, as before": Case(
        {"h1": 4, "h2": 3}, {}, 4, ["h2", "h1", "h2", "h1"], vms=on("h1", "a", "b")),
    "a host without figures competes by its places under max_vms": Case(
        TEN, {"h2": cap(512)}, 3, ["h1", "h1", "h1"]),
    "every host at max_vms keeps the short note": Case(
        {"h1": 1, "h2": 1}, {"h1": cap(4096)}, 1, [], ALL_FULL, vms=on("h1", "a") | on("h2", "b")),
    "one host full, the other out of memory: both reasons": Case(
        {"h1": 1, "h2": 10}, {"h1": cap(4096), "h2": cap(100)}, 1, [],
        "no host has room: h1 at its max_vms (1), h2 has 100 MiB free < one VM of 256 MiB", vms=on("h1", "a")),
    "no host known: creates go to any provisioner": Case({}, {}, 2, [None, None]),
    "a host with a pooled VM comes first, though another has more room": Case(
        TEN, {"h1": cap(512, running=("p",)), "h2": cap(4096)}, 2, ["h1", "h2"],
        vms=on("h1", "p", state=VmState.POOLED)),
    "a pooled VM a pending create is taking is no longer spare": Case(
        TEN, {}, 1, ["h2"], vms=on("h1", "p", state=VmState.POOLED), pending_on={"r1": "h1"}),
    "a host full with its pool still takes a create that resumes a pooled VM": Case(
        {"h1": 2, "h2": 10}, {"h1": cap(0, running=("a", "p")), "h2": cap(1024)}, 2, ["h1", "h2"],
        vms=on("h1", "a") | on("h1", "p", state=VmState.POOLED)),
    "hosts with pooled VMs are ranked among themselves by the usual rules": Case(
        TEN, {"h1": cap(1024, running=("p",)), "h2": cap(2048, running=("q",))}, 1, ["h2"],
        vms=on("h1", "p", state=VmState.POOLED) | on("h2", "q", state=VmState.POOLED)),
}


@pytest.mark.parametrize("case", PLACEMENTS.values(), ids=PLACEMENTS.keys())
def test_placement(case: Case) -> None:
    """Each create goes to a host with a spare pooled VM first, then the one with most places (memory, max_vms),
    then least overcommit, fewest VMs, name."""
    assert place(case.state(), case.count) == (case.placed, case.note)


def test_the_decisions_reason_says_why_no_host_has_room() -> None:
    """A fleet short of VMs with no room anywhere sends no create and says each host's reason in the note."""
    state = replace(Case(TEN, {"h1": cap(200), "h2": cap(250)}, 0, []).state(), desired=2)
    commands, state, note = reconcile(state, NOW)
    assert [c for c in commands if isinstance(c, CreateCommand)] == [] and state.failures.count == 0
    assert note == ("creating 0; no host has room: h1 has 200 MiB free < one VM of 256 MiB, "
                    "h2 has 250 MiB free < one VM of 256 MiB")


def test_placed_creates_are_remembered_against_their_host() -> None:
    """Creates placed by memory are pending on their host, so the next evaluation counts them there."""
    state = replace(Case(TEN, {"h1": cap(512), "h2": cap(512)}, 0, []).state(), desired=4)
    commands, state, note = reconcile(state, NOW)
    assert [c.host for c in commands if isinstance(c, CreateCommand)] == ["h1", "h2", "h1", "h2"]
    assert note == "creating 4" and sorted(state.placed.values()) == ["h1", "h1", "h2", "h2"]
    assert place(state, 1) == ([], "no host has room: h1 has 512 MiB free < 3 VMs of 256 MiB (2 not running yet), "
                                    "h2 has 512 MiB free < 3 VMs of 256 MiB (2 not running yet)")


@dataclass(frozen=True)
class ScaleIn:
    """VMs per host (oldest first within a host, by `created`), their in-flight requests, how many to remove."""

    vms: dict[str, VmView]
    count: int
    victims: list[str]
    busy: dict[str, int] = field(default_factory=dict)


def _at(host: str, created: dict[str, float], state: VmState = VmState.READY) -> dict[str, VmView]:
    return {n: replace(vm(n, state, created=t), host=host) for n, t in created.items()}


SCALE_INS = {
    "the fuller host gives its oldest, though an older VM is elsewhere": ScaleIn(
        _at("h1", {"a": 1, "b": 2, "c": 3}) | _at("h2", {"d": 0}), 1, ["a"]),
    "one at a time: once even, the oldest goes": ScaleIn(
        _at("h1", {"a": 2, "b": 3, "c": 4}) | _at("h2", {"d": 0, "e": 1}), 2, ["a", "d"]),
    "a lopsided fleet loses from its big host until even": ScaleIn(
        _at("h1", {"a": 1, "b": 2, "c": 3, "d": 4}) | _at("h2", {"e": 0}), 3, ["a", "b", "c"]),
    "a busier VM stays even on the fuller host": ScaleIn(
        _at("h1", {"a": 0, "b": 1}) | _at("h2", {"c": 2}), 1, ["c"], busy={"a": 5, "b": 5}),
    "a booting VM goes first, whatever its host": ScaleIn(
        _at("h1", {"a": 0, "b": 1}) | _at("h2", {"c": 2}, VmState.BOOTING), 1, ["c"]),
    "all on one host: oldest first, as before": ScaleIn(_at("h1", {"a": 0, "b": 1, "c": 2}), 2, ["a", "b"]),
}


@pytest.mark.parametrize("case", SCALE_INS.values(), ids=SCALE_INS.keys())
def test_scale_in_choice(case: ScaleIn) -> None:
    """Not serving first, then fewest outstanding, then the host with most VMs, then the oldest."""
    balancers = {"b1": BalancerView(id="b1", last_seen=NOW, outstanding={n: case.busy.get(n, 0) for n in case.vms})}
    state = FleetState(desired=0, policy=ScalingPolicy(), vms=case.vms, balancers=balancers)
    assert [v.name for v in pick_victims(state, case.count, NOW)] == case.victims
