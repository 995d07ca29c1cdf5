"""The warm pool: per-host deficits, surplus and recycling, capacity first, and pooled VMs never capacity."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import pytest

from services.scaler.core import edits
from services.scaler.core.decide import decide
from services.scaler.core.liveness import observe
from services.scaler.core.model import (
    AutoscaleMemory,
    BalancerView,
    CreateCommand,
    DestroyCommand,
    DrainCommand,
    DrainView,
    Failures,
    FleetState,
    VmView,
    pool_request,
)
from services.scaler.core.placement import place
from services.scaler.core.reconcile import counted, reconcile
from services.scaler.core.track import on_capacity, on_create_failed, on_created, on_vm_event
from shared.contract.base import ErrorCode
from shared.contract.commands import DrainVm
from shared.contract.events import VmState, VmStateChanged
from shared.contract.policy import ScalingPolicy
from shared.contract.provisioning import VmList, VmRecord
from shared.contract.status import DesiredState, PoolStatus
from shared.errors import BusError
from tests.unit.scaler.fleets import NOW, load

POOL_ID = "s1-e1-p1"
"""A pool create's request id: VMs carrying it are the pool's until a plain create takes them."""


def pooled(name: str, host: str = "h1", paused_s: float = 10.0, created: float = 0.0) -> VmView:
    """A VM paused in `host`'s pool for `paused_s` seconds."""
    return VmView(name=name, state=VmState.POOLED, since=NOW - paused_s, created=created, host=host,
                  request_id=POOL_ID, paused=True)


def booting_for_pool(name: str, host: str = "h1") -> VmView:
    """A VM a pool create made, still booting."""
    return VmView(name=name, state=VmState.BOOTING, since=NOW - 1, created=NOW - 1, host=host, request_id=POOL_ID)


def serving(name: str, host: str = "h1", created: float = 0.0) -> VmView:
    """A ready VM, warm long ago."""
    return VmView(name=name, state=VmState.READY, since=created, created=created, ready_at=created, host=host,
                  request_id="s1-e1-c1", address="127.0.0.1:4433")


def vms(*views: VmView) -> dict[str, VmView]:
    return {view.name: view for view in views}


@dataclass(frozen=True)
class Case:
    """A fleet with a pool policy; the creates (host, pooled), the destroys and the note one evaluation gives."""

    vms: dict[str, VmView]
    creates: list[tuple[str | None, bool]]
    destroys: list[str] = field(default_factory=list)
    note: str = "fleet matches desired size"
    desired: int = 0
    pool_size: int = 2
    pool_share: float = 0.0
    hosts: dict[str, int] = field(default_factory=lambda: {"h1": 10})
    pool_pending_on: dict[str, str] = field(default_factory=dict)
    pending_on: dict[str, str] = field(default_factory=dict)
    failures: Failures = field(default_factory=Failures)
    drains: dict[str, DrainView] = field(default_factory=dict)
    host_seen: dict[str, float] = field(default_factory=dict)

    def state(self) -> FleetState:
        policy = ScalingPolicy(min_replicas=0, pool_size=self.pool_size, pool_share=self.pool_share,
                               pool_max_age_s=1800)
        return FleetState(
            desired=self.desired, policy=policy, vms=self.vms, hosts=self.hosts, failures=self.failures,
            pending=dict.fromkeys(self.pending_on, NOW), pool_pending=dict.fromkeys(self.pool_pending_on, NOW),
            placed=self.pending_on | self.pool_pending_on, drains=self.drains, host_seen=self.host_seen,
        )


TWO = {"h1": 10, "h2": 10}
BEING_DESTROYED = DrainView(vm="p-gone", started=NOW, deadline=NOW, waiting=frozenset(), destroy_sent_at=NOW)
CASES = {
    "an empty pool is filled on every live host": Case(
        {}, [("h1", True), ("h1", True), ("h2", True), ("h2", True)], hosts=TWO,
        note="pool: refilling 2 on h1, 2 on h2"),
    "a lost host gets no pool create": Case(
        {}, [("h1", True), ("h1", True)], hosts=TWO, host_seen={"h1": NOW, "h2": NOW - 61},
        note="host h2 silent: its 0 VM(s) written off and replaced elsewhere; pool: refilling 2 on h1"),
    "pooled VMs, VMs booting for the pool and unanswered pool creates all count towards it": Case(
        vms(pooled("p1"), booting_for_pool("p2"), pooled("p3", "h2")), [], hosts=TWO,
        pool_pending_on={"s1-e1-p7": "h2"}),
    "a host short of one gets one": Case(
        vms(pooled("p1"), pooled("p2", "h2")), [("h1", True), ("h2", True)], hosts=TWO,
        note="pool: refilling 1 on h1, 1 on h2"),
    "a host gets no more pool creates than it has places": Case(
        vms(serving("a"), serving("b")), [("h1", True)], desired=2, hosts={"h1": 3},
        note="pool: refilling 1 on h1"),
    "a surplus is destroyed oldest first, without a drain": Case(
        vms(pooled("p-new", created=2), pooled("p-old", created=1)), [], ["p-old"], pool_size=1,
        note="pool: removing p-old on h1 (pool_size 1)"),
    "pool_size 0 removes the whole pool, VMs booting for it too": Case(
        vms(pooled("p1", created=1), booting_for_pool("p2")), [], ["p1", "p2"], pool_size=0,
        note="pool: removing p1, p2 on h1 (pool_size 0)"),
    "no surplus is destroyed while a create placed there may be taking one": Case(
        vms(pooled("p1", created=1), pooled("p2", created=2)), [], pool_size=1, desired=1,
        pending_on={"s1-e1-c9": "h1"}),
    "a VM paused past pool_max_age_s is destroyed and replaced": Case(
        vms(pooled("p-old", paused_s=1803), pooled("p-ok")), [("h1", True)], ["p-old"],
        note="pool: recycling p-old (paused 1803 s > pool_max_age_s 1800); pool: refilling 1 on h1"),
    "one recycle per host per evaluation, the longest paused first": Case(
        vms(pooled("p-a", paused_s=1900), pooled("p-b", paused_s=2000)), [("h1", True)], ["p-b"],
        note="pool: recycling p-b (paused 2000 s > pool_max_age_s 1800); pool: refilling 1 on h1"),
    "none is recycled while another of the host's pool is still being destroyed": Case(
        vms(pooled("p-gone"), pooled("p-old", paused_s=1900)), [("h1", True)], drains={"p-gone": BEING_DESTROYED},
        note="pool: refilling 1 on h1"),
    "capacity first: the host's last place goes to the capacity create": Case(
        vms(serving("a")), [("h1", False)], desired=2, hosts={"h1": 2}, note="creating 1"),
    "a capacity create resumes a pooled VM; the refill waits for the take": Case(
        vms(serving("a"), pooled("p1"), pooled("p2")), [("h1", False)], desired=2, note="creating 1"),
    "with no host known by name there is no pool": Case({}, [], hosts={}),
    "a share of the desired fleet, spread over the hosts, when it asks for more than pool_size": Case(
        vms(*(serving(f"s{i}", "h1" if i % 2 else "h2") for i in range(10))), [("h1", True), ("h2", True)],
        desired=10, pool_size=0, pool_share=0.2, hosts={"h1": 20, "h2": 20}, note="pool: refilling 1 on h1, 1 on h2"),
    "a share-sized pool keeps its VMs until it holds twice what the share asks": Case(
        vms(serving("a"), serving("b"), pooled("p1", created=1), pooled("p2", created=2)), [], desired=2,
        pool_size=0, pool_share=0.5),
    "a share-sized pool sheds past twice its size, oldest first": Case(
        vms(serving("a"), serving("b"), pooled("p1", created=1), pooled("p2", created=2), pooled("p3", created=3)),
        [], ["p1"],
        desired=2, pool_size=0, pool_share=0.5,
        note="pool: removing p1 on h1 (pool_share 0.5: 1 per host, kept up to 2)"),
    "pool_size stays the floor under a small share": Case(
        vms(serving("a"), pooled("p1")), [("h1", True)], desired=1, pool_size=2, pool_share=0.1,
        note="pool: refilling 1 on h1"),
    "backing off after a failure: no pool create, and the note says so": Case(
        {}, [], failures=Failures(count=1, last_at=NOW - 1), note="pool: refill backing off 4.0 s after 1 failure(s)"),
    "backing off with capacity missing too: the note says it once": Case(
        {}, [], desired=1, failures=Failures(count=1, last_at=NOW - 1),
        note="1 missing; backing off 4.0 s after 1 failure(s)"),
    "after a failure, one create at a time, and the capacity create first": Case(
        {}, [("h1", False)], desired=1, failures=Failures(count=1, last_at=NOW - 100), note="creating 1"),
    "after a failure, with no capacity missing, a single pool create": Case(
        {}, [("h1", True)], failures=Failures(count=1, last_at=NOW - 100), note="pool: refilling 1 on h1"),
    "after a failure, a pending pool create holds the next pool create": Case(
        {}, [], failures=Failures(count=1, last_at=NOW - 100), pool_pending_on={"s1-e1-p7": "h1"}),
    "a pending pool create never holds a capacity create back": Case(
        {}, [("h1", False)], desired=1, failures=Failures(count=1, last_at=NOW - 100),
        pool_pending_on={"s1-e1-p7": "h1"}, note="creating 1"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_pool(case: Case) -> None:
    """One evaluation keeps `pool_size` (or `pool_share`'s) fresh pooled VMs per live host, after the capacity
    creates, as tabled."""
    commands, _, note = reconcile(case.state(), NOW)
    assert [(c.host, c.pooled) for c in commands if isinstance(c, CreateCommand)] == case.creates
    assert [c.vm for c in commands if isinstance(c, DestroyCommand)] == case.destroys
    assert not any(isinstance(c, DrainCommand) for c in commands)
    assert note == case.note


def test_pool_creates_are_pending_on_their_host_apart_from_capacity() -> None:
    """Pool creates carry a pool request id, wait in `pool_pending` (not `pending`) and take room on their host."""
    commands, state, _ = reconcile(Case({}, []).state(), NOW)
    ids = [c.request_id for c in commands if isinstance(c, CreateCommand)]
    assert len(ids) == 2 and all(pool_request(i) for i in ids)
    assert set(state.pool_pending) == set(ids) and state.pending == {} and set(state.placed.values()) == {"h1"}
    assert reconcile(state, NOW + 1)[0] == ()


def test_pooled_vms_are_never_capacity() -> None:
    """Pooled VMs and VMs booting for the pool are not counted: one serving VM short of two gets one create."""
    state = Case(vms(serving("a"), pooled("p1"), booting_for_pool("p2")), [], desired=2, pool_size=2).state()
    assert [vm.name for vm in counted(state)] == ["a"]
    commands, _, _ = reconcile(state, NOW)
    assert [(c.host, c.pooled) for c in commands if isinstance(c, CreateCommand)] == [("h1", False)]


def test_a_scale_to_zero_keeps_the_pool() -> None:
    """Desired 0 drains every serving VM (destroyed at once: no balancer to wait for) and leaves the pool as it
    is; no pooled VM is drained or destroyed, and nothing is created."""
    state = Case(vms(serving("a"), serving("b"), pooled("p1"), pooled("p2")), [], desired=0).state()
    commands, state, note = reconcile(state, NOW)
    assert sorted(c.vm for c in commands if isinstance(c, DrainCommand)) == ["a", "b"]
    assert sorted(c.vm for c in commands if isinstance(c, DestroyCommand)) == ["a", "b"]
    assert not any(isinstance(c, CreateCommand) for c in commands)
    assert {"p1", "p2"}.isdisjoint(state.drains) and note == "draining a, b"


def test_pooled_vms_are_never_judged_sick() -> None:
    """A pooled VM is paused in libvirt and unroutable on every balancer, and is still never marked sick."""
    state = Case(vms(serving("a"), pooled("p1"), pooled("p2")), [], desired=1).state()
    views = {"b1": BalancerView(id="b1", last_seen=NOW, outstanding={"a": 0, "p1": 0}, unroutable=frozenset({"p1"}))}
    state = replace(state, balancers=views)
    assert observe(state, NOW).sick_since == {}
    later = replace(state, balancers={"b1": replace(views["b1"], last_seen=NOW + 600)})
    assert reconcile(later, NOW + 600)[0] == ()


def test_the_autoscaler_sizes_from_the_serving_fleet_alone() -> None:
    """The decision with a pool (pooled and booting for it) is the decision without one: same size, same reason."""
    policy = ScalingPolicy(warmup_s=0)
    base = FleetState(desired=2, policy=policy, vms=vms(serving("a"), serving("b")), hosts={"h1": 10},
                      memory=AutoscaleMemory.seeded(2, NOW - 1))
    with_pool = replace(base, vms=dict(base.vms) | vms(pooled("p1"), booting_for_pool("p2")))
    plain, pool = decide(base, load(base, 16.0), NOW), decide(with_pool, load(base, 16.0), NOW)
    assert pool.desired == plain.desired == 4
    assert [c.host for c in pool.commands if isinstance(c, CreateCommand) and not c.pooled] == ["h1", "h1"]


@pytest.mark.parametrize("replied", [VmState.BOOTING, VmState.POOLED])
def test_after_a_take_the_next_evaluation_refills_the_pool(replied: VmState) -> None:
    """A create resumes a pooled VM (its reply, before any event, names it with the create's id, booting or still
    pooled): the VM is capacity, booting, the create settled, and the next evaluation sends one pool create there."""
    state = Case(vms(pooled("p1")), [], desired=1, pool_size=1).state()
    commands, state, _ = reconcile(state, NOW)
    (create,) = [c for c in commands if isinstance(c, CreateCommand)]
    assert (create.host, create.pooled) == ("h1", False)
    reply = VmRecord(vm="p1", state=replied, since=datetime.fromtimestamp(NOW - 10, UTC),
                     request_id=create.request_id, host="h1")
    state = on_created(state, create.request_id, reply, NOW + 1)
    assert state.vms["p1"].state is VmState.BOOTING and state.pending == {} and state.vms["p1"].capacity
    commands, state, note = reconcile(state, NOW + 1)
    assert [(c.host, c.pooled) for c in commands if isinstance(c, CreateCommand)] == [("h1", True)]
    assert note == "pool: refilling 1 on h1"


def test_a_pool_create_reply_does_not_set_a_pooled_vm_back() -> None:
    """The pool create's own reply (requested) arriving after the `pooled` event leaves the VM pooled."""
    state = Case({}, [], pool_pending_on={POOL_ID: "h1"}).state()
    state = on_vm_event(state, VmStateChanged(vm="p1", state=VmState.POOLED, host="h1", request_id=POOL_ID), NOW)
    reply = VmRecord(vm="p1", state=VmState.REQUESTED, since=datetime.fromtimestamp(NOW - 5, UTC),
                     request_id=POOL_ID, host="h1")
    state = on_created(state, POOL_ID, reply, NOW)
    assert state.vms["p1"].state is VmState.POOLED and state.pool_pending == {}


def test_failed_pool_creates_feed_the_backoff_and_a_pooled_vm_clears_it() -> None:
    """A refused pool create counts as a failure for every create; a VM reaching the pool ends the streak."""
    state = on_create_failed(Case({}, [], pool_pending_on={POOL_ID: "h1"}).state(), POOL_ID, NOW)
    assert state.failures.count == 1 and state.pool_pending == {} and state.placed == {}
    commands, _, note = reconcile(replace(state, desired=1), NOW + 1)
    assert commands == () and "backing off" in note
    state = on_vm_event(state, VmStateChanged(vm="p1", state=VmState.POOLED, host="h1", request_id="s1-e1-p2"), NOW)
    assert state.failures.count == 0


def test_placement_skips_pooled_vms_being_destroyed() -> None:
    """A pooled VM on its way out is no spare: the create goes by places, to the emptier host."""
    state = Case(vms(pooled("p-gone"), serving("a")), [], hosts=TWO, drains={"p-gone": BEING_DESTROYED}).state()
    assert place(state, 1) == (["h2"], "")


@pytest.mark.parametrize(
    ("request_id", "pool"),
    [("s1-e3-p12", True), ("scaler-a-b-e0-p1", True), ("s1-e3-c12", False), ("p-e1-c2", False), (None, False)],
)
def test_pool_request_ids(request_id: str | None, pool: bool) -> None:
    """A pool create's id ends in `-e<epoch>-p<seq>`, whatever the leader's name; any other id is no pool's."""
    assert pool_request(request_id) is pool


def test_status_shows_the_pool_per_host() -> None:
    """Status lists pooled VMs in their own state, marked the pool's with their host, and each host's pool."""
    state = Case(vms(serving("a"), pooled("p1"), pooled("p2", "h2"), booting_for_pool("p3")), [], hosts=TWO,
                 pool_pending_on={"s1-e1-p9": "h2"}).state()
    status = edits.status(DesiredState(desired=1), state, None, 0, None, NOW)
    assert [(v.name, v.state, v.host, v.pool) for v in status.vms] == [
        ("a", VmState.READY, "h1", False), ("p1", VmState.POOLED, "h1", True),
        ("p2", VmState.POOLED, "h2", True), ("p3", VmState.BOOTING, "h1", True),
    ]
    assert status.pools == [PoolStatus(host="h1", pooled=1, coming=1), PoolStatus(host="h2", pooled=1, coming=1)]


def test_a_pool_vm_is_never_drained_on_request() -> None:
    """`fleet.cmd.drain` of a pooled VM is `invalid` (lower pool_size instead), and the size is untouched."""
    state = Case(vms(serving("a"), pooled("p1")), [], desired=1).state()
    with pytest.raises(BusError) as caught:
        edits.drain(DesiredState(desired=1), DrainVm(vm="p1"), state, NOW)
    assert caught.value.code is ErrorCode.INVALID and "pool_size" in caught.value.message


def test_a_pooled_vms_memory_is_already_taken_on_its_host() -> None:
    """A pooled VM is paused, and a paused domain keeps its memory: the list counts it running, so placement
    takes no second VM's memory for it."""
    listed = VmList(host="h1", max_vms=10, free_memory_mib=512, vm_memory_mib=256, vms=[
        VmRecord(vm="p1", state=VmState.POOLED, since=datetime.fromtimestamp(NOW, UTC), request_id=POOL_ID),
    ])
    state = on_capacity(Case(vms(pooled("p1")), [], pool_size=0).state(), [listed])
    assert state.capacity["h1"].running == {"p1"}
    assert place(replace(state, vms={}), 2) == (["h1", "h1"], "")
    assert place(state, 3) == (["h1", "h1", "h1"], "")
