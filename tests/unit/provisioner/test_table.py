"""The one table: it applies the changes a VM's steps yield, publishes each new state, and alone marks a drain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest
from structlog.testing import capture_logs

from services.provisioner.core.changes import Advance, Change, Fail, Learn
from services.provisioner.core.errors import CannotDrain, StaleEpoch, UnknownVm
from services.provisioner.core.machine import requested
from shared.contract.events import VmState
from shared.contract.provisioning import CreateVm, StartDrain
from tests.support import wait_until
from tests.unit.provisioner.fakes import FakeHypervisor
from tests.unit.provisioner.harness import Harness

S = VmState


async def test_the_table_publishes_advances_keeps_learnt_facts_quiet_and_removes_on_fail() -> None:
    """Yielded Advance is published (with its facts), Learn only stored, a refused Advance skipped, Fail removes."""
    h = Harness(FakeHypervisor())
    await h.fleet.put(requested("qf-1", "r1", h.fleet.clock()))

    async def steps() -> AsyncGenerator[Change, None]:
        yield Advance(S.CLONING, learnt=Learn(uuid="u-1"))
        yield Learn(macs=("52:54:00:00:00:01",))
        yield Advance(S.READY, "127.0.0.1:1")  # cloning cannot become ready: skipped
        yield Fail("gave up on purpose")

    with capture_logs() as logs:
        h.fleet.spawn("qf-1", steps())
        await wait_until(lambda: S.DESTROYED in h.states("qf-1"), timeout=5, what="destroyed")
    assert h.states("qf-1") == [S.REQUESTED, S.CLONING, S.FAILED, S.DESTROYED]
    assert h.published[1].uuid == "u-1" and h.published[2].macs == ("52:54:00:00:00:01",)
    assert h.published[2].reason == "gave up on purpose"
    assert "vm.transition_skipped" in [line["event"] for line in logs]


async def test_a_cancelled_vm_task_closes_its_steps_so_a_slot_they_hold_is_freed() -> None:
    """Stopping the fleet while a step holds a clone slot and waits leaves the slot free again."""
    h = Harness(FakeHypervisor())
    slot = asyncio.Semaphore(1)
    await h.fleet.put(requested("qf-1", "r1", h.fleet.clock()))
    held = asyncio.Event()

    async def steps() -> AsyncGenerator[Change, None]:
        async with slot:
            yield Advance(S.CLONING)
            held.set()
            await asyncio.Event().wait()

    h.fleet.spawn("qf-1", steps())
    await asyncio.wait_for(held.wait(), 5)
    assert slot.locked()
    await h.fleet.stop()
    assert not slot.locked() and h.fleet.tasks == {}


async def ready_vm(h: Harness) -> str:
    record = await h.fleet.create(CreateVm(request_id="r1", epoch=2))
    await wait_until(lambda: S.READY in h.states(record.vm), timeout=5, what="ready")
    return record.vm


async def test_a_drain_marks_a_ready_vm_draining_once_and_a_repeat_publishes_nothing() -> None:
    """StartDrain publishes one `draining` with its deadline; the same again answers the same record, silently."""
    h = Harness(FakeHypervisor())
    name = await ready_vm(h)
    first = await h.fleet.drain(StartDrain(vm=name, request_id="s1", epoch=2, deadline_s=9))
    again = await h.fleet.drain(StartDrain(vm=name, request_id="s2", epoch=2))
    assert (first.state, again, h.states(name).count(S.DRAINING)) == (S.DRAINING, first, 1)
    assert h.published[-1].deadline_s == 9 and h.published[-1].reason == "asked to drain (request s1)"
    await h.fleet.republish()
    assert (h.published[-1].state, h.published[-1].deadline_s) == (S.DRAINING, 9)


async def test_a_drain_is_refused_for_a_stale_epoch_an_unknown_vm_or_one_not_serving() -> None:
    """An older epoch, a name with no live VM, and a pooled VM are refused; none publishes anything."""
    h = Harness(FakeHypervisor())
    name = await ready_vm(h)
    pooled = await h.fleet.create(CreateVm(request_id="p1", epoch=2, pooled=True))
    await wait_until(lambda: S.POOLED in h.states(pooled.vm), timeout=5, what="pooled")
    published = len(h.published)
    with pytest.raises(StaleEpoch):
        await h.fleet.drain(StartDrain(vm=name, request_id="s", epoch=1))
    with pytest.raises(UnknownVm):
        await h.fleet.drain(StartDrain(vm="qf-00000000", request_id="s", epoch=2))
    with pytest.raises(CannotDrain):
        await h.fleet.drain(StartDrain(vm=pooled.vm, request_id="s", epoch=2))
    assert len(h.published) == published and h.fleet.entries[name].state is S.READY
    await h.fleet.stop()
