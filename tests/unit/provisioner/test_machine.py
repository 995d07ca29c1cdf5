"""The VM state machine, the tag round trip and the reconcile decisions (all pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.provisioner.core.machine import IllegalTransition, adopted, requested, to_event, to_record, transition
from services.provisioner.core.ports import DomainView
from services.provisioner.core.reconcile import HALF_MADE, LEFTOVER, VANISHED, Adopt, Forget, Remove, plan_reconcile
from services.provisioner.core.tags import VmTag, parse_tag, tag_xml
from shared.contract.events import VmState

T0 = datetime(2026, 1, 1, tzinfo=UTC)
S = VmState


def test_contract_order_is_allowed() -> None:
    """requested -> cloning -> booting -> ready -> destroyed walks through, keeping the address."""
    entry = requested("qf-1", "r1", T0, address="10.0.0.1:443")
    for step, state in enumerate((S.CLONING, S.BOOTING, S.READY, S.DESTROYED), start=1):
        entry = transition(entry, state, T0 + timedelta(seconds=step))
    assert entry.state is S.DESTROYED and entry.address == "10.0.0.1:443"
    assert entry.since == T0 + timedelta(seconds=4) and entry.created_at == T0


@pytest.mark.parametrize(("path", "bad"), [((), S.READY), ((S.CLONING,), S.REQUESTED), ((S.DESTROYED,), S.FAILED)])
def test_out_of_order_transitions_are_refused(path: tuple[VmState, ...], bad: VmState) -> None:
    """Skipping ahead, going back, or leaving destroyed raises IllegalTransition."""
    entry = requested("qf-1", "r1", T0)
    for state in path:
        entry = transition(entry, state, T0)
    with pytest.raises(IllegalTransition):
        transition(entry, bad, T0)


def test_failed_carries_reason_into_event_and_record() -> None:
    """A failed VM's event has the reason, the host and the request id; its record the state."""
    entry = transition(requested("qf-1", "r1", T0), S.FAILED, T0, reason="x" * 600)
    event = to_event(entry, "h1")
    assert event.state is S.FAILED and event.host == "h1" and event.request_id == "r1"
    assert event.reason is not None and len(event.reason) == 500
    assert to_record(entry, "h1").state is S.FAILED


def test_tag_round_trips_through_metadata_xml() -> None:
    """The tag written for virDomainSetMetadata parses back to the same values."""
    tag = VmTag("fleet", "r-9", T0, "h1", "[::1]:443", ("/p/a.qcow2", "/p/b.qcow2"), epoch=42)
    assert parse_tag(tag_xml(tag)) == tag
    assert parse_tag("<vm><fleet>f</fleet></vm>") is None
    assert parse_tag("not xml") is None


def _view(name: str, active: bool, fleet: str = "f", host: str = "h") -> DomainView:
    return DomainView(name, active, VmTag(fleet, f"r-{name}", T0, host))


def test_reconcile_removes_half_made_and_adopts_running() -> None:
    """A defined-but-stopped tagged domain is removed; a running one we forgot is adopted."""
    actions = plan_reconcile([_view("qf-a", False), _view("qf-b", True)], {}, (), "f", "h")
    assert actions == [Remove(_view("qf-a", False), HALF_MADE), Adopt(_view("qf-b", True))]


def test_reconcile_never_touches_foreign_or_busy_domains() -> None:
    """Other fleets, other hosts, untagged domains and VMs a task works on are left alone."""
    views = [_view("qf-a", False, fleet="other"), _view("qf-b", False, host="h2"), DomainView("x", False, None),
             _view("qf-c", False)]
    assert plan_reconcile(views, {}, {"qf-c"}, "f", "h") == []


def test_reconcile_forgets_vanished_and_removes_leftovers() -> None:
    """A ready entry without a domain is forgotten; a domain of a failed entry is removed again."""
    ready = transition(transition(transition(requested("qf-r", None, T0), S.CLONING, T0), S.BOOTING, T0), S.READY, T0)
    failed = adopted("qf-f", S.FAILED, T0, VmTag("f", None, T0, "h"))
    actions = plan_reconcile([_view("qf-f", True)], {"qf-r": ready, "qf-f": failed}, (), "f", "h")
    assert actions == [Remove(_view("qf-f", True), LEFTOVER), Forget("qf-r", VANISHED)]
