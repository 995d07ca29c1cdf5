"""Paused VMs: libvirt's pauses and resumes reach the table and the bus at once, and reconcile catches missed ones."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from structlog.testing import capture_logs

from services.provisioner.core.machine import adopted, to_event, transition
from services.provisioner.core.pauses import paused_by, plan_pauses, with_pause
from services.provisioner.core.ports import DomainEvent, DomainEventKind, DomainView
from services.provisioner.core.tags import VmTag
from shared.contract.events import VmState
from shared.contract.provisioning import CreateVm
from tests.support import wait_until
from tests.unit.provisioner.fakes import FakeHypervisor
from tests.unit.provisioner.harness import Harness

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TAG = VmTag("f1", "r1", T0, "h1", "127.0.0.1:1")


def test_only_suspend_and_resume_say_anything_about_a_pause() -> None:
    """SUSPENDED means paused, RESUMED means not, and every other lifecycle event leaves the flag alone."""
    assert paused_by(DomainEventKind.SUSPENDED) is True
    assert paused_by(DomainEventKind.RESUMED) is False
    assert {paused_by(k) for k in (DomainEventKind.STARTED, DomainEventKind.STOPPED, DomainEventKind.CRASHED)} == {None}


def test_a_pause_is_news_only_for_a_running_vm_whose_flag_changes() -> None:
    """A ready, booting or draining VM takes the new flag; the same flag, a failed VM or no entry at all is no news."""
    ready = adopted("qf-1", VmState.READY, T0, TAG)
    assert with_pause(ready, True) == replace(ready, paused=True)
    assert with_pause(replace(ready, paused=True), True) is None
    assert with_pause(transition(ready, VmState.FAILED, T0), True) is None
    assert with_pause(None, True) is None
    assert with_pause(adopted("qf-1", VmState.BOOTING, T0, TAG), True) is not None


def test_reconcile_plans_missed_pauses_but_trusts_newer_events() -> None:
    """A listing contradicting an entry's flag changes it, unless an event changed the flag after the listing began."""
    views = [DomainView(n, True, TAG, paused=n in {"qf-1", "qf-3"}) for n in ("qf-1", "qf-2", "qf-3", "qf-4")]
    before = {
        "qf-1": adopted("qf-1", VmState.READY, T0, TAG),
        "qf-2": replace(adopted("qf-2", VmState.READY, T0, TAG), paused=True),
        "qf-3": adopted("qf-3", VmState.READY, T0, TAG),
        "qf-4": adopted("qf-4", VmState.READY, T0, TAG),
    }
    now = dict(before) | {"qf-3": transition(before["qf-3"], VmState.FAILED, T0),
                          "qf-4": replace(before["qf-4"], paused=True)}
    assert plan_pauses(views, before, now) == [("qf-1", True), ("qf-2", False)]
    adopted_since = {"qf-5": adopted("qf-5", VmState.BOOTING, T0, TAG)}
    assert plan_pauses([DomainView("qf-5", True, TAG, paused=True)], {}, adopted_since) == [("qf-5", True)]


async def ready_vm(h: Harness) -> str:
    record = await h.fleet.create(CreateVm(request_id="r1", epoch=1))
    await wait_until(lambda: VmState.READY in h.states(record.vm), timeout=5, what="ready")
    return record.vm


async def test_a_suspended_ready_vm_is_republished_paused_and_a_resume_clears_it() -> None:
    """SUSPENDED republishes the ready VM at once with paused (same state, same since, logged with the detail);
    a repeat is no news; RESUMED republishes it unpaused."""
    hv = FakeHypervisor()
    h = Harness(hv)
    name = await ready_vm(h)
    ready = h.fleet.entries[name]
    published = len(h.published)
    with capture_logs() as logs:
        await h.fleet.on_domain_event(DomainEvent(name, DomainEventKind.SUSPENDED, "ioerror"))
        await h.fleet.on_domain_event(DomainEvent(name, DomainEventKind.SUSPENDED, "ioerror"))
    assert len(h.published) == published + 1
    paused = h.published[-1]
    assert (paused.state, paused.since, paused.paused) == (VmState.READY, ready.since, True)
    assert to_event(paused, "h1").paused and h.fleet.records().vms[0].paused
    assert [(e["event"], e["detail"]) for e in logs if e["event"].startswith("vm.")] == [("vm.paused", "ioerror")]
    await h.fleet.on_domain_event(DomainEvent(name, DomainEventKind.RESUMED, "0"))
    assert len(h.published) == published + 2 and not h.published[-1].paused
    assert not h.fleet.records().vms[0].paused
    await h.fleet.stop()


async def test_reconcile_picks_up_a_pause_and_a_resume_it_missed() -> None:
    """A pause libvirt lists but no event announced (missed while disconnected) is set by reconcile and
    republished; a missed resume is cleared the same way."""
    hv = FakeHypervisor()
    h = Harness(hv)
    name = await ready_vm(h)
    hv.paused.add(name)
    with capture_logs() as logs:
        await h.fleet.reconcile()
    assert h.fleet.entries[name].paused and h.fleet.entries[name].state is VmState.READY
    assert h.published[-1].name == name and h.published[-1].paused
    assert any(e["event"] == "vm.paused" and e["detail"] == "found by reconcile" for e in logs)
    hv.paused.clear()
    await h.fleet.reconcile()
    assert not h.fleet.entries[name].paused and not h.published[-1].paused
    await h.fleet.stop()
