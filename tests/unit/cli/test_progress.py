"""The scale progress tracker fed by VM events and status replies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ops.cli.progress import FleetTracker, Verdict
from shared.contract.events import VmState, VmStateChanged
from shared.contract.policy import ScalingPolicy
from shared.contract.status import FleetStatus, VmStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def event(vm: str, state: VmState, seconds: float, reason: str | None = None) -> VmStateChanged:
    return VmStateChanged(vm=vm, state=state, at=T0 + timedelta(seconds=seconds), reason=reason)


def status(*vms: tuple[str, VmState, float]) -> FleetStatus:
    listed = [VmStatus(name=n, state=s, since=T0 + timedelta(seconds=t)) for n, s, t in vms]
    return FleetStatus(desired=len(vms), policy=ScalingPolicy(), vms=listed)


def test_reached_only_when_exactly_target_vms_are_ready() -> None:
    """Two ready VMs out of a target of two is reached; a third still booting is not."""
    tracker = FleetTracker(target=2)
    for name in ("a", "b"):
        tracker.apply(event(name, VmState.READY, 1))
    assert tracker.verdict() is Verdict.REACHED
    tracker.apply(event("c", VmState.BOOTING, 2))
    assert tracker.verdict() is Verdict.WAITING
    assert tracker.summary() == "2/2 ready (1 booting)"


def test_scale_down_waits_for_draining_vms_to_be_destroyed() -> None:
    """A draining VM still counts as live until its destroyed event arrives."""
    tracker = FleetTracker(target=1)
    tracker.merge(status(("a", VmState.READY, 0), ("b", VmState.DRAINING, 0)))
    assert tracker.verdict() is Verdict.WAITING
    tracker.apply(event("b", VmState.DESTROYED, 5))
    assert tracker.verdict() is Verdict.REACHED


def test_older_information_never_overrides_newer() -> None:
    """A status listing an older state does not undo a newer event, and a late old event is ignored."""
    tracker = FleetTracker(target=1)
    tracker.apply(event("a", VmState.READY, 10))
    tracker.merge(status(("a", VmState.BOOTING, 5)))
    tracker.apply(event("a", VmState.CLONING, 1))
    assert tracker.vms["a"].state is VmState.READY


def test_vms_known_only_from_status_vanish_when_status_drops_them() -> None:
    """A VM the last status listed but the new one does not is forgotten; event-only VMs stay."""
    tracker = FleetTracker(target=1)
    tracker.merge(status(("old", VmState.READY, 0)))
    tracker.apply(event("new", VmState.READY, 3))
    tracker.merge(status())
    assert set(tracker.vms) == {"new"}
    assert tracker.verdict() is Verdict.REACHED


def test_gives_up_after_max_failures() -> None:
    """The tracker fails once as many VMs failed as allowed, keeping their reasons."""
    tracker = FleetTracker(target=2, max_failures=2)
    tracker.apply(event("a", VmState.FAILED, 1, reason="no lease"))
    assert tracker.verdict() is Verdict.WAITING
    tracker.apply(event("b", VmState.FAILED, 2, reason="boot timeout"))
    assert tracker.verdict() is Verdict.FAILED
    assert tracker.failures == ["a: no lease", "b: boot timeout"]
