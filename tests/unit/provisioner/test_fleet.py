"""Fleet command rules and clone execution over a hand-written fake hypervisor."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from services.provisioner.core.errors import CannotClone, NoRoom, StaleEpoch
from services.provisioner.core.ports import HypervisorError
from services.provisioner.service import bus_error
from shared.contract.base import ErrorCode
from shared.contract.events import VmState
from shared.contract.provisioning import CreateVm, DestroyVm
from tests.support import wait_until
from tests.unit.provisioner.fakes import DISK, FakeHypervisor
from tests.unit.provisioner.harness import Harness


async def test_create_runs_define_volume_start_then_ready() -> None:
    """A create defines, makes the overlay, starts, and publishes requested..ready with the address."""
    hv = FakeHypervisor()
    h = Harness(hv)
    record = await h.fleet.create(CreateVm(request_id="r1", epoch=1))
    await wait_until(lambda: VmState.READY in h.states(record.vm), timeout=5, what="ready")
    assert h.states(record.vm) == [VmState.REQUESTED, VmState.CLONING, VmState.BOOTING, VmState.READY]
    assert hv.calls[-3:] == ["define", "create_volume", "start"]
    assert h.fleet.entries[record.vm].address == "127.0.0.1:1"


async def test_failed_start_undoes_domain_and_volume() -> None:
    """When start fails, the domain is undefined and the overlay deleted, then failed and destroyed go out."""
    hv = FakeHypervisor()
    hv.fail_on = "start"
    h = Harness(hv)
    record = await h.fleet.create(CreateVm(request_id="r1", epoch=1))
    await wait_until(lambda: VmState.DESTROYED in h.states(record.vm), timeout=5, what="destroyed")
    assert hv.defined == {} and hv.volumes == {DISK}
    failed = next(e for e in h.published if e.state is VmState.FAILED)
    assert "start failed on purpose" in (failed.reason or "")


async def test_boot_deadline_fails_and_removes_the_vm() -> None:
    """A VM that never answers HTTP/3 is failed with the last probe error and torn down."""
    hv = FakeHypervisor()
    h = Harness(hv, ready=False)
    record = await h.fleet.create(CreateVm(request_id="r1", epoch=1))
    await wait_until(lambda: VmState.DESTROYED in h.states(record.vm), timeout=5, what="destroyed")
    failed = next(e for e in h.published if e.state is VmState.FAILED)
    assert "not ready within 0.5 s" in (failed.reason or "") and "127.0.0.1:1" in (failed.reason or "")
    assert hv.defined == {}


async def test_repeated_request_id_and_stale_epoch() -> None:
    """The same request id returns the same VM; an older epoch is a conflict and changes nothing."""
    h = Harness(FakeHypervisor())
    first = await h.fleet.create(CreateVm(request_id="r1", epoch=5))
    again = await h.fleet.create(CreateVm(request_id="r1", epoch=5))
    assert again.vm == first.vm
    with pytest.raises(StaleEpoch) as caught:
        await h.fleet.create(CreateVm(request_id="r2", epoch=4))
    assert bus_error(caught.value).code is ErrorCode.CONFLICT
    assert len(h.fleet.entries) == 1
    await h.fleet.stop()


async def test_ceiling_and_static_pool_limit_creates() -> None:
    """Past max_vms, or with every static address taken, a create is `unavailable`."""
    h = Harness(FakeHypervisor(), max_vms=1)
    await h.fleet.create(CreateVm(request_id="r1", epoch=1))
    with pytest.raises(NoRoom, match="max_vms=1") as caught:
        await h.fleet.create(CreateVm(request_id="r2", epoch=1))
    assert bus_error(caught.value).code is ErrorCode.UNAVAILABLE
    h2 = Harness(FakeHypervisor(), static_addresses="127.0.0.1:1")
    await h2.fleet.create(CreateVm(request_id="r1", epoch=1))
    with pytest.raises(NoRoom, match="static addresses"):
        await h2.fleet.create(CreateVm(request_id="r2", epoch=1))
    await h.fleet.stop()
    await h2.fleet.stop()


async def test_missing_template_is_unavailable_naming_it() -> None:
    """Without the template the reply is `unavailable` naming the template and the URI."""
    h = Harness(FakeHypervisor(has_template=False))
    with pytest.raises(CannotClone, match=r"backend-template.*fake:///") as caught:
        await h.fleet.create(CreateVm(request_id="r1", epoch=1))
    assert bus_error(caught.value).code is ErrorCode.UNAVAILABLE


async def test_destroy_mid_clone_cancels_and_cleans_up() -> None:
    """A destroy that arrives while the VM boots cancels the work and leaves nothing in the hypervisor."""
    hv = FakeHypervisor()
    h = Harness(hv, ready=False, boot_timeout_s=60)
    record = await h.fleet.create(CreateVm(request_id="r1", epoch=1))
    await wait_until(lambda: VmState.BOOTING in h.states(record.vm), timeout=5, what="booting")
    result = await h.fleet.destroy(DestroyVm(vm=record.vm, request_id="d1", epoch=1))
    assert result.state is VmState.DESTROYED
    assert hv.defined == {} and hv.volumes == {DISK} and h.fleet.tasks == {}


async def test_concurrent_creates_with_one_request_id_make_one_vm() -> None:
    """Creates racing with the same request id (while the template is read) all get the same VM."""
    hv = FakeHypervisor()
    h = Harness(hv)
    records = await asyncio.gather(*(h.fleet.create(CreateVm(request_id="r1", epoch=1)) for _ in range(5)))
    assert {r.vm for r in records} == {records[0].vm}
    await wait_until(lambda: VmState.READY in h.states(records[0].vm), timeout=5, what="ready")
    assert list(hv.defined) == [records[0].vm]


async def test_concurrent_destroys_tear_down_once() -> None:
    """Two destroys of one VM at once both answer destroyed, and destroyed is published once."""
    hv = FakeHypervisor()
    h = Harness(hv)
    record = await h.fleet.create(CreateVm(request_id="r1", epoch=1))
    await wait_until(lambda: VmState.READY in h.states(record.vm), timeout=5, what="ready")
    command = DestroyVm(vm=record.vm, request_id="d1", epoch=1)
    results = await asyncio.gather(h.fleet.destroy(command), h.fleet.destroy(command))
    assert [r.state for r in results] == [VmState.DESTROYED, VmState.DESTROYED]
    assert h.states(record.vm).count(VmState.DESTROYED) == 1
    assert hv.calls.count("undefine") == 1


async def test_clones_and_boots_in_flight_are_bounded() -> None:
    """With provisioner_max_in_flight=1 a second VM waits in `requested` until the first is ready."""
    hv = FakeHypervisor()
    h = Harness(hv, provisioner_max_in_flight=1, boot_timeout_s=30)
    release = asyncio.Event()

    async def gated_probe(address: str, uuid: str | None = None) -> str | None:
        return None if release.is_set() else "still booting"

    h.fleet.probe = gated_probe
    first = await h.fleet.create(CreateVm(request_id="r1", epoch=1))
    second = await h.fleet.create(CreateVm(request_id="r2", epoch=1))
    await wait_until(lambda: VmState.BOOTING in h.states(first.vm), timeout=5, what="first booting")
    assert h.states(second.vm) == [VmState.REQUESTED]
    assert list(hv.defined) == [first.vm]
    release.set()
    await wait_until(lambda: VmState.READY in h.states(second.vm), timeout=10, what="second ready")
    assert h.states(first.vm)[-1] is VmState.READY


async def test_reconcile_deletes_our_orphan_disk_only() -> None:
    """Reconcile deletes a disk of ours left without a domain and keeps the template's and a running VM's."""
    hv = FakeHypervisor()
    h = Harness(hv)
    record = await h.fleet.create(CreateVm(request_id="r1", epoch=1))
    await wait_until(lambda: VmState.READY in h.states(record.vm), timeout=5, what="ready")
    orphan, foreign = "/fleet-pool/qf-0badf00d-vda.f1.h1.qcow2", "/fleet-pool/qf-0badf00d-vda.f2.h1.qcow2"
    hv.volumes |= {orphan, foreign}
    await h.fleet.reconcile()
    assert hv.volumes == {DISK, foreign, f"/fleet-pool/{record.vm}-vda.f1.h1.qcow2"}
    await h.fleet.stop()


class LibvirtGoneAtStart(FakeHypervisor):
    """libvirtd goes away as the clone starts: the start fails and so does every teardown step."""

    def start(self, name: str) -> None:
        raise HypervisorError("starting: End of file while reading data")

    def undefine(self, name: str) -> bool:
        raise HypervisorError("cannot connect to libvirt")

    def stop(self, name: str) -> bool:
        raise HypervisorError("cannot connect to libvirt")


async def test_a_clone_whose_teardown_libvirt_cannot_finish_fails_without_a_crashed_task() -> None:
    """A start that fails while libvirtd is gone publishes failed, logs the unfinished teardown for the
    reconcile, and leaves no crashed task (no traceback)."""
    h = Harness(LibvirtGoneAtStart())
    with structlog.testing.capture_logs() as logs:
        record = await h.fleet.create(CreateVm(request_id="r1", epoch=1))
        await wait_until(lambda: record.vm not in h.fleet.tasks, timeout=5, what="the clone's task ended")
    assert h.states(record.vm)[-1] is VmState.FAILED
    events = [line["event"] for line in logs]
    assert "vm.remove_incomplete" in events and "vm.task_crashed" not in events, events
