"""The warm pool over the fake hypervisor: pooled creates, takes, and pooled VMs found after a restart (the pure
rules alone: test_warmpool.py)."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from services.provisioner.core.ports import DomainEvent, DomainEventKind
from services.provisioner.core.warmpool import TAKE_FAILED
from shared.contract.events import VmState
from shared.contract.provisioning import CreateVm, DestroyVm
from tests.support import wait_until
from tests.unit.provisioner.fakes import DISK, IDENTITY_TEMPLATE_XML, FakeHypervisor
from tests.unit.provisioner.harness import Harness

S = VmState


async def pooled_vm(h: Harness, request_id: str = "p1") -> str:
    record = await h.fleet.create(CreateVm(request_id=request_id, epoch=1, pooled=True))
    await wait_until(lambda: S.POOLED in h.states(record.vm), timeout=5, what="pooled")
    return record.vm


async def test_a_pooled_create_boots_checks_once_then_pauses_tagged_as_pooled() -> None:
    """A pooled create goes requested..booting then pooled (paused, never ready), its domain paused and tagged;
    libvirt's SUSPENDED event of that pause is no news, and the list carries the VM as pooled."""
    hv = FakeHypervisor()
    h = Harness(hv)
    name = await pooled_vm(h)
    assert h.states(name) == [S.REQUESTED, S.CLONING, S.BOOTING, S.POOLED]
    assert h.published[-1].paused and [e.paused for e in h.published[:-1]] == [False, False, False]
    assert name in hv.paused and hv.tag(name) is not None and hv.tag(name).pooled  # type: ignore[union-attr]
    assert len(h.probed) == 1
    published = len(h.published)
    await h.fleet.on_domain_event(DomainEvent(name, DomainEventKind.SUSPENDED, "paused"))
    assert len(h.published) == published
    assert [(v.vm, v.state, v.paused) for v in h.fleet.records().vms] == [(name, S.POOLED, True)]


async def test_a_plain_create_takes_the_pooled_vm_resumes_and_rechecks_it_as_itself() -> None:
    """A plain create answers at once with the pooled VM (booting, the new request id), resumes it, probes it
    again with its UUID, then ready; no clone is made, the tag says taken, and the RESUMED event is no news."""
    hv = FakeHypervisor()
    hv.template_xml = IDENTITY_TEMPLATE_XML
    h = Harness(hv)
    name = await pooled_vm(h)
    record = await h.fleet.create(CreateVm(request_id="r1", epoch=2))
    assert (record.vm, record.state, record.request_id, record.paused) == (name, S.BOOTING, "r1", False)
    await wait_until(lambda: S.READY in h.states(name), timeout=5, what="ready")
    assert h.states(name)[-3:] == [S.POOLED, S.BOOTING, S.READY]
    assert name not in hv.paused and hv.calls.count("define") == 1
    assert hv.calls.index("set_tag") < hv.calls.index("resume")
    assert h.probed[-1] == ("127.0.0.1:1", h.fleet.entries[name].uuid) and len(h.probed) == 2
    tag = hv.tag(name)
    assert tag is not None and (tag.pooled, tag.request_id, tag.epoch) == (False, "r1", 2)
    published = len(h.published)
    await h.fleet.on_domain_event(DomainEvent(name, DomainEventKind.RESUMED, "unpaused"))
    assert len(h.published) == published and h.published[-1].request_id == "r1"


async def test_a_repeated_request_id_returns_the_taken_vm_without_a_second_take() -> None:
    """The same request id again answers with the VM it took (while booting and once ready); one resume in all."""
    hv = FakeHypervisor()
    h = Harness(hv)
    name = await pooled_vm(h)
    await pooled_vm(h, "p2")
    first = await h.fleet.create(CreateVm(request_id="r1", epoch=1))
    again = await h.fleet.create(CreateVm(request_id="r1", epoch=1))
    await wait_until(lambda: S.READY in h.states(first.vm), timeout=5, what="ready")
    later = await h.fleet.create(CreateVm(request_id="r1", epoch=1))
    assert first.vm == again.vm == later.vm and later.state is S.READY
    assert hv.calls.count("resume") == 1
    assert [e.state for e in h.fleet.live() if e.name != first.vm] == [S.POOLED]
    assert first.vm != name  # the one pooled last went first


async def test_concurrent_creates_never_take_the_same_pooled_vm() -> None:
    """Two plain creates at once with one VM in the pool: one takes it, the other clones a new VM."""
    hv = FakeHypervisor()
    h = Harness(hv)
    name = await pooled_vm(h)
    records = await asyncio.gather(*(h.fleet.create(CreateVm(request_id=f"r{i}", epoch=1)) for i in (1, 2)))
    assert sorted(r.state for r in records) == [S.BOOTING, S.REQUESTED]
    assert len({r.vm for r in records}) == 2 and name in {r.vm for r in records}
    await wait_until(lambda: all(S.READY in h.states(r.vm) for r in records), timeout=5, what="both ready")
    assert hv.calls.count("resume") == 1 and hv.calls.count("define") == 2


async def test_a_destroy_mid_take_cancels_the_take_and_leaves_nothing() -> None:
    """A destroy while the taken VM is being checked again cancels the take and removes domain and disk."""
    hv = FakeHypervisor()
    h = Harness(hv, boot_timeout_s=60)
    name = await pooled_vm(h)
    h.ready = False
    await h.fleet.create(CreateVm(request_id="r1", epoch=1))
    await wait_until(lambda: "resume" in hv.calls and len(h.probed) >= 2, timeout=5, what="the take probing")
    result = await h.fleet.destroy(DestroyVm(vm=name, request_id="d1", epoch=1))
    assert result.state is S.DESTROYED and h.states(name)[-1] is S.DESTROYED
    assert S.FAILED not in h.states(name)
    assert hv.defined == {} and hv.volumes == {DISK} and h.fleet.tasks == {}


async def test_a_take_that_does_not_answer_again_fails_and_removes_the_vm() -> None:
    """A resumed VM that does not answer within boot_timeout_s is failed (saying it was taken) and torn down."""
    hv = FakeHypervisor()
    h = Harness(hv)
    name = await pooled_vm(h)
    h.ready = False
    await h.fleet.create(CreateVm(request_id="r1", epoch=1))
    await wait_until(lambda: S.DESTROYED in h.states(name), timeout=5, what="destroyed")
    failed = next(e for e in h.published if e.name == name and e.state is S.FAILED)
    assert (failed.reason or "").startswith(TAKE_FAILED) and "not ready within 0.5 s" in (failed.reason or "")
    assert failed.request_id == "r1" and hv.defined == {}


async def test_a_taken_vm_gets_its_clock_set_after_ready_and_a_refusal_costs_nothing() -> None:
    """After `ready` the take sets the guest's clock (it stood still while paused); an agent that cannot is logged."""
    hv = FakeHypervisor()
    h = Harness(hv)
    first = await pooled_vm(h)
    await h.fleet.create(CreateVm(request_id="r1", epoch=1))
    await wait_until(lambda: "set_clock" in hv.calls, timeout=5, what="the clock set")
    assert h.states(first)[-1] is S.READY and hv.calls.index("resume") < hv.calls.index("set_clock")
    second = await pooled_vm(h, "p2")
    hv.fail_on = "set_clock"
    with capture_logs() as logs:
        await h.fleet.create(CreateVm(request_id="r2", epoch=1))
        await wait_until(lambda: hv.calls.count("set_clock") == 2 and not h.fleet.tasks, timeout=5, what="done")
    assert h.states(second)[-1] is S.READY
    assert [e["event"] for e in logs if e["event"].startswith("pool.")] == ["pool.clock_not_set"]


async def test_a_resume_that_fails_fails_the_take() -> None:
    """libvirt refusing the resume fails and removes the taken VM with libvirt's words."""
    hv = FakeHypervisor()
    h = Harness(hv)
    name = await pooled_vm(h)
    hv.fail_on = "resume"
    await h.fleet.create(CreateVm(request_id="r1", epoch=1))
    await wait_until(lambda: S.DESTROYED in h.states(name), timeout=5, what="destroyed")
    failed = next(e for e in h.published if e.name == name and e.state is S.FAILED)
    assert "resume failed on purpose" in (failed.reason or "") and hv.defined == {}


async def test_a_restarted_provisioner_adopts_a_paused_pooled_vm_as_pooled_and_can_take_it() -> None:
    """After a restart the paused pool VM is pooled again without a probe (age from its creation), and a create
    takes it as before."""
    hv = FakeHypervisor()
    first = Harness(hv)
    name = await pooled_vm(first)
    created = first.fleet.entries[name].created_at
    await first.fleet.stop()
    h = Harness(hv)
    await h.fleet.reconcile()
    entry = h.fleet.entries[name]
    assert (entry.state, entry.paused, entry.since, entry.request_id) == (S.POOLED, True, created, "p1")
    assert h.probed == [] and h.states(name) == [S.POOLED, S.POOLED]  # adopted, then republished
    record = await h.fleet.create(CreateVm(request_id="r1", epoch=1))
    assert record.vm == name
    await wait_until(lambda: S.READY in h.states(name), timeout=5, what="ready")


async def test_a_pool_vm_found_running_is_probed_and_paused_back_into_the_pool() -> None:
    """A pool VM found running after a restart (stopped before its pause) is adopted booting, probed, then pooled."""
    hv = FakeHypervisor()
    first = Harness(hv)
    name = await pooled_vm(first)
    await first.fleet.stop()
    hv.paused.discard(name)
    h = Harness(hv)
    await h.fleet.reconcile()
    await wait_until(lambda: S.POOLED in h.states(name), timeout=5, what="pooled again")
    assert h.states(name)[0] is S.BOOTING and len(h.probed) == 1 and name in hv.paused


async def test_a_taken_vm_found_after_a_restart_is_adopted_and_becomes_ready() -> None:
    """A VM whose take was under way when the provisioner stopped (tag already taken) is probed and ready."""
    hv = FakeHypervisor()
    first = Harness(hv, boot_timeout_s=60)
    name = await pooled_vm(first)
    first.ready = False
    await first.fleet.create(CreateVm(request_id="r1", epoch=1))
    await wait_until(lambda: "resume" in hv.calls, timeout=5, what="the take resuming")
    await first.fleet.stop()
    h = Harness(hv)
    await h.fleet.reconcile()
    await wait_until(lambda: S.READY in h.states(name), timeout=5, what="ready")
    assert h.fleet.entries[name].request_id == "r1" and S.POOLED not in h.states(name)


async def test_a_pooled_vm_that_crashes_is_failed_and_removed() -> None:
    """libvirt reporting a pooled VM crashed fails it with the reason and tears it down."""
    hv = FakeHypervisor()
    h = Harness(hv)
    name = await pooled_vm(h)
    hv.running.discard(name)
    await h.fleet.on_domain_event(DomainEvent(name, DomainEventKind.CRASHED, "0"))
    assert h.states(name)[-2:] == [S.FAILED, S.DESTROYED] and hv.defined == {}


async def test_a_pooled_create_that_never_answers_fails_like_any_clone() -> None:
    """A pool VM that never passes its first readiness is failed and removed, never paused."""
    hv = FakeHypervisor()
    h = Harness(hv, ready=False)
    record = await h.fleet.create(CreateVm(request_id="p1", epoch=1, pooled=True))
    await wait_until(lambda: S.DESTROYED in h.states(record.vm), timeout=5, what="destroyed")
    assert S.POOLED not in h.states(record.vm) and "suspend" not in hv.calls
