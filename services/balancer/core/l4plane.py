"""The l4 mode's decisions: which VMs the kernel may send new flows to, and when a drain is over.

In `l4` the balancer forwards nothing itself; the kernel's conntrack keeps each established flow
on its VM and the balancer only rewrites which VMs take new ones. So a drain cannot end on "no
request in flight" (there are none here): it ends when conntrack shows no flow to the VM, read
after the VM left the map (a reading from before could miss a flow that arrived in between), or
at its deadline. Pure: the glue (`l4.plane`) passes the clock and the readings in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from services.balancer.core.backends import Backend, BackendTable
from shared.contract.load import BackendLoad, BalancerReported


class FlowFigures(Protocol):
    """One VM's flows as the kernel counts them (conntrack entries, nft counters)."""

    @property
    def entries(self) -> int: ...

    @property
    def packets(self) -> int: ...

    @property
    def bytes(self) -> int: ...


def targets(table: BackendTable, now: float) -> list[Backend]:
    """The VMs that may take new flows now: the table's candidates (health, identity, panic), none draining.

    The table's drain bridge (a draining VM answers while its replacement proves itself) is left
    out here: a request ends in milliseconds, a flow sent to a leaving VM lives on and holds its
    drain open until the deadline; a client's first packet lost for a moment is only resent.
    """
    return sorted((b for b in table.candidates(now) if not b.draining), key=lambda b: b.vm)


class FlowBook:
    """Which VMs are out of the kernel's map since when, and the latest flow counts read.

    `busy(vm)` is what holds a drain open: 1 (unknown, so busy) until a reading taken after the
    VM left the map, then that reading's conntrack entries for it.
    """

    def __init__(self) -> None:
        self.out_since: dict[str, float] = {}
        """VM -> when the map was last written without it (first such write)."""
        self.read_at: float | None = None
        self.flows: dict[str, FlowFigures] = {}

    def applied(self, mapped: Iterable[str], known: Iterable[str], now: float) -> None:
        """The map now holds `mapped`: every other `known` VM is out of it from `now` (unless it already was)."""
        inside = set(mapped)
        for vm in known:
            if vm in inside:
                self.out_since.pop(vm, None)
            else:
                self.out_since.setdefault(vm, now)

    def read(self, flows: Mapping[str, FlowFigures], now: float) -> None:
        """A reading of every VM's flows that began at `now` (after the last `applied`)."""
        self.flows = dict(flows)
        self.read_at = now

    def busy(self, vm: str) -> int:
        """Flows that keep `vm`'s drain open (1 while not known)."""
        since = self.out_since.get(vm)
        if since is None or self.read_at is None or self.read_at < since:
            return 1
        figures = self.flows.get(vm)
        return figures.entries if figures is not None else 0

    def forget(self, keep: Iterable[str]) -> None:
        """Drop every VM but `keep` (the table's): a removed VM's bookkeeping ends with it."""
        kept = set(keep)
        self.out_since = {vm: t for vm, t in self.out_since.items() if vm in kept}
        self.flows = {vm: f for vm, f in self.flows.items() if vm in kept}


def drain_load(table: BackendTable, book: FlowBook) -> Callable[[str], int]:
    """The router's drain question in l4 (`Router.busy`): a VM gone from the table holds nothing open."""

    def busy(vm: str) -> int:
        return book.busy(vm) if table.get(vm) is not None else 0

    return busy


def with_flows(report: BalancerReported, flows: Mapping[str, FlowFigures]) -> BalancerReported:
    """The load report with each VM's flows, packets and bytes (the kernel's counts) filled in."""
    return report.model_copy(update={"backends": [_filled(load, flows.get(load.vm)) for load in report.backends]})


def _filled(load: BackendLoad, figures: FlowFigures | None) -> BackendLoad:
    if figures is None:
        return load
    return load.model_copy(update={"flows": figures.entries, "packets": figures.packets, "bytes": figures.bytes})
