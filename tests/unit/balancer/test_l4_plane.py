"""The l4 mode's decisions (which VMs take new flows, when a drain is over) and its loop over a fake kernel."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from services.balancer.core.backends import BackendTable
from services.balancer.core.drain import DrainBook, DrainOver
from services.balancer.core.health import HealthPolicy
from services.balancer.core.identity import Verification
from services.balancer.core.l4plane import FlowBook, drain_load, targets, with_flows
from services.balancer.core.options import ProxyOptions
from services.balancer.core.policy import Picker
from services.balancer.core.retry import RetryBudget
from services.balancer.l4.build import client_side
from services.balancer.l4.plane import L4Plane
from services.balancer.proxy.membership import apply_event
from services.balancer.proxy.router import Router
from shared.contract.events import VmState, VmStateChanged
from shared.contract.load import BackendLoad, BalancerReported
from tests.support import wait_until
from tests.support.balancer_fakes import FakeUpstream


@dataclass(frozen=True)
class Flows:
    """One VM's kernel figures, as the passthrough reads them."""

    entries: int
    packets: int = 0
    bytes: int = 0


def _table(*vms: str) -> BackendTable:
    table = BackendTable(HealthPolicy(rise=1, fall=1))
    for index, vm in enumerate(vms):
        table.ready(vm, f"10.0.0.{10 + index}:8443", 0.0, fresh=False)
    return table


def test_targets_are_the_healthy_non_draining_vms_in_name_order() -> None:
    """A draining VM is left out of the map and an unhealthy one leaves it; the rest are sorted by name."""
    table = _table("vm-c", "vm-a", "vm-b", "vm-d")
    table.drain("vm-b")
    table.get("vm-d").health.check_failed()  # type: ignore[union-attr]
    assert [b.vm for b in targets(table, 1.0)] == ["vm-a", "vm-c"]


def test_a_draining_vm_stays_out_even_when_it_is_the_only_one() -> None:
    """No drain bridge in l4: with every VM draining the map is empty (a flow sent there would pin the drain)."""
    table = _table("vm-a", "vm-b")
    table.get("vm-b").verification = Verification.of("uuid-b", 1)  # type: ignore[union-attr]  # proving itself
    table.drain("vm-a")
    assert targets(table, 1.0) == []


def test_drain_is_busy_until_a_reading_after_the_vm_left_the_map() -> None:
    """A reading from before the VM left the map says nothing; the first one after it with 0 flows ends it."""
    book = FlowBook()
    book.read({"vm-a": Flows(0)}, 1.0)
    assert book.busy("vm-a") == 1  # still in the map: no `applied` without it yet
    book.applied(["vm-b"], ["vm-a", "vm-b"], 2.0)
    assert book.busy("vm-a") == 1  # the reading at 1.0 is older than the map change
    book.read({"vm-a": Flows(3)}, 2.0)
    assert book.busy("vm-a") == 3
    book.read({}, 2.2)  # conntrack shows nothing for it any more
    assert book.busy("vm-a") == 0


def test_out_since_keeps_the_first_write_without_the_vm() -> None:
    """Later writes without the VM do not move its time out of the map, and coming back clears it."""
    book = FlowBook()
    book.applied([], ["vm-a"], 1.0)
    book.applied([], ["vm-a"], 5.0)
    assert book.out_since == {"vm-a": 1.0}
    book.applied(["vm-a"], ["vm-a"], 6.0)
    assert book.out_since == {}


def test_drain_ends_at_zero_flows_or_at_its_deadline() -> None:
    """With the l4 drain load a drain waits while flows remain, ends at 0, and times out at the deadline."""
    table, book, drains = _table("vm-a", "vm-b"), FlowBook(), DrainBook()
    busy = drain_load(table, book)
    table.drain("vm-a"), table.drain("vm-b")
    drains.start("vm-a", 0.0, 30.0, "r1")
    drains.start("vm-b", 0.0, 10.0, "r2")
    book.applied([], ["vm-a", "vm-b"], 0.1)
    book.read({"vm-a": Flows(2), "vm-b": Flows(5)}, 0.2)
    assert drains.finished(1.0, busy) == []
    book.read({"vm-b": Flows(5)}, 1.2)
    assert drains.finished(1.3, busy) == [DrainOver("vm-a", timed_out=False, request_ids=("r1",))]
    assert drains.finished(10.0, busy) == [DrainOver("vm-b", timed_out=True, request_ids=("r2",))]


def test_a_vm_gone_from_the_table_holds_no_drain_open() -> None:
    """A removed VM's drain is over at once (nothing is left to wait for)."""
    table, book = _table("vm-a"), FlowBook()
    table.remove("vm-a")
    assert drain_load(table, book)("vm-a") == 0


def test_report_carries_the_kernel_figures_per_vm() -> None:
    """`with_flows` fills flows, packets and bytes of the VMs read, and leaves the others at 0."""
    report = BalancerReported(balancer="b", started_at=datetime.now(UTC),
                              backends=[BackendLoad(vm="vm-a"), BackendLoad(vm="vm-b")])
    filled = with_flows(report, {"vm-a": Flows(4, 100, 9000)})
    assert [(b.vm, b.flows, b.packets, b.bytes) for b in filled.backends] == [
        ("vm-a", 4, 100, 9000), ("vm-b", 0, 0, 0)]


class FakeKernel:
    """The passthrough port without a kernel: remembers each map written and answers set flows."""

    def __init__(self) -> None:
        self.maps: list[list[str]] = []
        self.current: dict[str, Flows] = {}
        self.known: set[str] | None = None
        self.closed = False

    async def start(self) -> None:
        """Nothing to set up."""

    async def apply(self, targets: Sequence[object], known: Collection[str] | None = None) -> bool:
        self.known = None if known is None else set(known)
        wanted = [str(getattr(t, "vm", t)) for t in targets]
        changed = not self.maps or self.maps[-1] != wanted
        if changed:
            self.maps.append(wanted)
        return changed

    async def flows(self) -> Mapping[str, Flows]:
        return dict(self.current)

    async def close(self) -> None:
        self.closed = True


def _router(table: BackendTable, book: FlowBook, drained: list[DrainOver]) -> Router:
    return Router(table, Picker("round_robin", rng=random.Random()), RetryBudget(), lambda backend: FakeUpstream(),
                  ProxyOptions(), drained.append, busy=drain_load(table, book))


async def test_loop_drops_a_draining_vm_from_the_map_and_ends_its_drain_when_its_flows_are_gone() -> None:
    """Drain under the l4 loop: the VM leaves the map at the next sync, the drain ends once its flows read 0."""
    table, book, kernel = _table("vm-a", "vm-b"), FlowBook(), FakeKernel()
    drained: list[DrainOver] = []
    router = _router(table, book, drained)
    plane = L4Plane(router, kernel, lambda b: b.vm, 0.2, book)
    kernel.current = {"vm-a": Flows(2), "vm-b": Flows(1)}
    await plane.sync()
    assert kernel.maps == [["vm-a", "vm-b"]]
    apply_event(router, VmStateChanged(vm="vm-b", state=VmState.DRAINING, deadline_s=30), router.loop.time())
    assert drained == []  # no reading since it left the map: busy
    await plane.sync()
    assert kernel.maps[-1] == ["vm-a"] and drained == []  # out of the map, its one flow still there
    assert kernel.known == {"vm-a", "vm-b"}  # the fleet's VMs: a draining one is still known
    kernel.current = {"vm-a": Flows(2)}
    await plane.sync()
    assert [d.vm for d in drained] == ["vm-b"] and not drained[0].timed_out
    await plane.close()
    assert kernel.closed


def test_client_side_interfaces_are_all_but_lo_the_vm_bridge_and_its_ports() -> None:
    """Learning's client side by default: every interface but loopback, the VMs' bridge and the VMs' taps on it."""
    links: list[Mapping[str, object]] = [
        {"ifname": "lo"}, {"ifname": "eth1"}, {"ifname": "virbr0"}, {"ifname": "vnet0", "master": "virbr0"},
        {"ifname": "eth0"}, {"ifname": "docker0"},
    ]
    assert client_side(links, "virbr0") == ["docker0", "eth0", "eth1"]


class BrokenKernel(FakeKernel):
    """A kernel whose writes fail (nft refused the batch)."""

    async def apply(self, targets: Sequence[object], known: Collection[str] | None = None) -> bool:
        raise RuntimeError("nft: Could not process rule")


async def test_a_failing_sync_is_counted_and_the_loop_goes_on() -> None:
    """The loop outlives failed writes (counted, retried each tick) and stops on close; nothing is read meanwhile."""
    table, book = _table("vm-a"), FlowBook()
    plane = L4Plane(_router(table, book, []), BrokenKernel(), lambda b: b.vm, 0.01, book)
    running = asyncio.create_task(plane.run())
    await wait_until(lambda: plane.failures >= 3, timeout=5, what="three failed syncs")
    await plane.close()
    await asyncio.wait_for(running, 5)
    assert book.read_at is None and plane.mapped is None


class FakeLearning:
    """Connection-ID learning without BPF: records each slot hand-over and whether it was detached."""

    def __init__(self) -> None:
        self.given: list[dict[str, int]] = []
        self.detached = False

    def set_slots(self, mapping: Mapping[str, int]) -> None:
        self.given.append(dict(mapping))

    def learned(self) -> int:
        return 0

    def detach(self) -> None:
        self.detached = True


async def test_slots_go_to_learning_by_vm_address_only_when_they_change() -> None:
    """Learning gets VM address -> slot after a write, once per change (not every tick), and is detached on close."""
    table, book, learning = _table("vm-a", "vm-b"), FlowBook(), FakeLearning()
    slots = {"vm-a": 1, "vm-b": 2}

    async def attach() -> tuple[FakeLearning, str]:
        return learning, "on"

    plane = L4Plane(_router(table, book, []), FakeKernel(), lambda b: b.vm, 0.2, book, attach, lambda: slots)
    await plane.start()
    await plane.sync()
    await plane.sync()
    assert learning.given == [{"10.0.0.10": 1, "10.0.0.11": 2}] and plane.cid_note == "on"
    slots = {"vm-a": 1}
    await plane.sync()
    assert learning.given[-1] == {"10.0.0.10": 1}
    await plane.close()
    assert learning.detached
