"""What a host reports about its room: one VM's size from the template, the host's figures, the list reply."""

from __future__ import annotations

import asyncio
import threading

import pytest
from structlog.testing import capture_logs

from services.provisioner import room as room_module
from services.provisioner.core.capacity import Capacity, measure, template_size, unit_bytes
from services.provisioner.core.ports import HostFacts
from shared.contract.provisioning import CPUS_MAX, MEMORY_MIB_MAX
from tests.unit.provisioner.fakes import FakeHypervisor
from tests.unit.provisioner.harness import Harness


@pytest.mark.parametrize(
    ("xml", "size"),
    [
        ("<domain><memory unit='MiB'>256</memory><vcpu>1</vcpu></domain>", (256, 1)),
        ("<domain><memory>524288</memory><vcpu>2</vcpu></domain>", (512, 2)),
        ("<domain><memory unit='GiB'>2</memory><vcpu placement='static'>4</vcpu></domain>", (2048, 4)),
        ("<domain><memory unit='G'>1</memory><vcpu current='2'>8</vcpu></domain>", (1024, 2)),
        ("<domain><memory unit='KB'>1000</memory><vcpu>1</vcpu></domain>", (1, 1)),
        ("<domain><memory unit='bytes'>1</memory></domain>", (1, None)),
        ("<domain><memory unit='MB'>1000</memory><vcpu>x</vcpu></domain>", (954, None)),
        ("<domain><memory unit='furlong'>1</memory><vcpu>1</vcpu></domain>", (None, 1)),
        ("<domain><vcpu>1</vcpu></domain>", (None, 1)),
        ("not xml", (None, None)),
    ],
    ids=["MiB", "KiB-default", "GiB", "G-current-vcpus", "KB-rounded-up", "bytes", "MB-bad-vcpu", "bad-unit",
         "no-memory", "not-xml"],
)
def test_one_vms_size_is_the_templates_memory_and_vcpus(xml: str, size: tuple[int | None, int | None]) -> None:
    """`<memory>` in any of libvirt's units becomes whole MiB, rounded up; `<vcpu current>` wins over the count."""
    assert template_size(xml) == size


def test_libvirt_units_are_binary_unless_they_say_b() -> None:
    """`k`, `KiB` and `K` are 1024, `KB` is 1000, `b` and `bytes` are one byte, and an unknown unit is None."""
    assert [unit_bytes(u) for u in ("k", "KiB", "K", "KB", "b", "bytes", "TiB", "PB", "x", "kiB2")] == [
        1024, 1024, 1024, 1000, 1, 1, 1024**4, 1000**5, None, None,
    ]


def test_figures_are_bounded_as_the_contract_says_and_missing_halves_are_none() -> None:
    """Figures above the contract's bounds are capped, impossible ones (no CPU) dropped, unread halves None."""
    huge = HostFacts(cpus=CPUS_MAX * 2, free_memory_mib=MEMORY_MIB_MAX * 2)
    assert measure(huge, None) == Capacity(free_memory_mib=MEMORY_MIB_MAX, cpus=CPUS_MAX)
    assert measure(HostFacts(cpus=0, free_memory_mib=-1), None) == Capacity()
    template = "<domain><memory unit='MiB'>256</memory><vcpu>2</vcpu></domain>"
    assert measure(None, template) == Capacity(vm_memory_mib=256, vm_vcpus=2)


async def test_a_list_carries_the_hosts_figures_and_the_templates_size() -> None:
    """The list reply says the host's free memory and CPUs and the memory and vCPUs of one template VM."""
    listed = await Harness(FakeHypervisor()).fleet.listing()
    assert (listed.free_memory_mib, listed.cpus, listed.vm_memory_mib, listed.vm_vcpus) == (4096, 8, 256, 1)
    assert listed.host == "h1" and listed.max_vms == 10


async def test_a_libvirt_error_leaves_its_half_out_and_the_list_still_answers() -> None:
    """A failing host read leaves the host's figures None, a missing template the VM's size; each logged once."""
    hv = FakeHypervisor(has_template=False)
    hv.fail_on = "host_facts"
    harness = Harness(hv)
    with capture_logs() as logs:
        first = await harness.fleet.listing()
        second = await harness.fleet.listing()
    assert first == second
    assert (first.free_memory_mib, first.cpus, first.vm_memory_mib, first.vm_vcpus) == (None, None, None, None)
    assert sorted(e["part"] for e in logs if e["event"] == "capacity.unknown") == ["host", "template"]


class HungHypervisor(FakeHypervisor):
    """A libvirt whose host read does not return until `release` is set (a stuck libvirtd)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def host_facts(self) -> HostFacts:
        self.release.wait(10)
        return super().host_facts()


async def test_a_hung_libvirt_costs_the_list_its_figures_not_its_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """When libvirt does not answer within the capacity timeout the list goes out without figures, in time."""
    monkeypatch.setattr(room_module, "CAPACITY_TIMEOUT_S", 0.05)
    hv = HungHypervisor()
    harness = Harness(hv)
    try:
        listed = await asyncio.wait_for(harness.fleet.listing(), 2)
    finally:
        hv.release.set()
    assert (listed.free_memory_mib, listed.cpus, listed.vm_memory_mib) == (None, None, None)
