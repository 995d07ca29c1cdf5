"""VM events and fleet listings applied to the router (with a fake upstream: no sockets)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from services.balancer.core.backends import Backend, BackendTable
from services.balancer.core.drain import DrainOver
from services.balancer.core.health import HealthPolicy
from services.balancer.core.options import ProxyOptions
from services.balancer.core.policy import Picker
from services.balancer.core.retry import RetryBudget
from services.balancer.proxy.membership import apply_event, apply_listing
from services.balancer.proxy.router import Router
from shared.contract.events import VmState, VmStateChanged
from shared.contract.provisioning import VmList, VmRecord
from tests.support import wait_until
from tests.support.balancer_fakes import FakeUpstream


def _router(drained: list[DrainOver]) -> Router:
    return Router(BackendTable(HealthPolicy()), Picker("round_robin", rng=random.Random()), RetryBudget(),
                  lambda backend: FakeUpstream(), ProxyOptions(), drained.append)


def _event(vm: str, state: VmState, address: str | None = "127.0.0.1:9000") -> VmStateChanged:
    return VmStateChanged(vm=vm, state=state, address=address)


async def test_ready_adds_and_destroyed_removes_and_closes_upstream() -> None:
    """A ready VM becomes a candidate; destroyed removes it and closes its upstream."""
    router = _router([])
    assert apply_event(router, _event("vm-a", VmState.READY), 0.0) == "added"
    upstream = router.upstream_for(router.table.get("vm-a"))  # type: ignore[arg-type]
    assert [b.vm for b in router.table.candidates(0.0)] == ["vm-a"]
    assert apply_event(router, _event("vm-a", VmState.DESTROYED, None), 1.0) == "removed"
    assert router.table.get("vm-a") is None and upstream.closed  # type: ignore[attr-defined]


async def test_states_before_ready_and_ready_without_address_change_nothing() -> None:
    """Booting VMs and a ready event without an address are ignored."""
    router = _router([])
    assert apply_event(router, _event("vm-a", VmState.BOOTING), 0.0) == "ignored"
    assert apply_event(router, _event("vm-a", VmState.READY, None), 0.0) == "ignored_no_address"
    assert len(router.table) == 0


async def test_draining_event_on_idle_vm_reports_drained_at_once() -> None:
    """A draining event for a VM with nothing in flight ends its drain immediately."""
    drained: list[DrainOver] = []
    router = _router(drained)
    apply_event(router, _event("vm-a", VmState.READY), 0.0)
    assert apply_event(router, _event("vm-a", VmState.DRAINING), 1.0) == "draining"
    assert router.table.candidates(1.0) == []
    assert drained == [DrainOver("vm-a", timed_out=False, request_ids=(None,))]


async def test_drain_waits_for_in_flight_request() -> None:
    """A drain with a request in flight ends when that request's attempt is over."""
    drained: list[DrainOver] = []
    router = _router(drained)
    apply_event(router, _event("vm-a", VmState.READY), 0.0)
    backend: Backend = router.table.get("vm-a")  # type: ignore[assignment]
    backend.began()
    router.drain("vm-a", 30, "d-1")
    assert drained == []
    router.attempt_over(backend, 0.01, failed=False, upstream_failed=False)
    assert drained == [DrainOver("vm-a", timed_out=False, request_ids=("d-1",))]


async def test_listing_adds_only_unknown_ready_vms() -> None:
    """A fleet listing adds ready VMs with addresses that events have not announced yet."""
    router = _router([])
    apply_event(router, _event("vm-a", VmState.READY, "127.0.0.1:9001"), 0.0)
    since = datetime.now(UTC)
    listing = VmList(host="hv1", vms=[
        VmRecord(vm="vm-a", state=VmState.READY, address="127.0.0.1:9999", since=since),
        VmRecord(vm="vm-b", state=VmState.READY, address="127.0.0.1:9002", since=since),
        VmRecord(vm="vm-c", state=VmState.BOOTING, since=since),
    ])
    assert apply_listing(router, [listing], 1.0) == 1
    assert router.table.get("vm-a").port == 9001  # type: ignore[union-attr]
    assert sorted(router.table.backends) == ["vm-a", "vm-b"]


async def test_a_drain_ends_at_its_deadline_even_when_nothing_finishes() -> None:
    """A draining event's `deadline_s` ends the drain (timed out) on a timer, with its request still in flight."""
    drained: list[DrainOver] = []
    router = _router(drained)
    apply_event(router, _event("vm-a", VmState.READY), 0.0)
    backend: Backend = router.table.get("vm-a")  # type: ignore[assignment]
    backend.began()
    event = VmStateChanged(vm="vm-a", state=VmState.DRAINING, address="127.0.0.1:9000", deadline_s=0.05)
    assert apply_event(router, event, 1.0) == "draining" and drained == []
    await wait_until(lambda: drained, timeout=5, what="the drain's deadline")
    assert drained == [DrainOver("vm-a", timed_out=True, request_ids=(None,))]
    router.close()
