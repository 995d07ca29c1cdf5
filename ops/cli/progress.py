"""Where a `quicfleet scale N` stands: a pure tracker fed by VM events and status replies.

Events are fast but can be missed (the CLI subscribes only when it starts); status replies are
the scaler's whole view but arrive only when asked. The tracker keeps, per VM, the newest of the
two, so the verdict is right whichever arrives first.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from shared.contract.events import LIVE_STATES, VmState, VmStateChanged
from shared.contract.status import FleetStatus


class Verdict(StrEnum):
    WAITING = "waiting"
    REACHED = "reached"
    FAILED = "failed"


@dataclass
class Seen:
    """The latest known state of one VM and whether an event (not a status poll) said so."""

    state: VmState
    at: datetime
    from_event: bool


@dataclass
class FleetTracker:
    """Counts VMs by state until the fleet holds exactly `target` VMs, all ready."""

    target: int
    max_failures: int = 3
    vms: dict[str, Seen] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def apply(self, event: VmStateChanged) -> None:
        """Take a `fleet.vm.<state>` event unless something newer is already known."""
        known = self.vms.get(event.vm)
        if known is not None and known.at > event.at:
            return
        self.vms[event.vm] = Seen(event.state, event.at, from_event=True)
        if event.state is VmState.FAILED:
            self.failures.append(f"{event.vm}: {event.reason or 'failed'}")

    def merge(self, status: FleetStatus) -> None:
        """Take a status reply: newer states win; VMs only a past status knew of and it no longer lists go."""
        listed = {vm.name for vm in status.vms}
        for name in [n for n, seen in self.vms.items() if n not in listed and not seen.from_event]:
            del self.vms[name]
        for vm in status.vms:
            known = self.vms.get(vm.name)
            if known is None or known.at <= vm.since:
                self.vms[vm.name] = Seen(vm.state, vm.since, from_event=False)

    def counts(self) -> Counter[VmState]:
        return Counter(seen.state for seen in self.vms.values())

    def live(self) -> int:
        return sum(1 for seen in self.vms.values() if seen.state in LIVE_STATES)

    def verdict(self) -> Verdict:
        """Reached when exactly `target` VMs are live and all of them ready; failed after too many failures."""
        if len(self.failures) >= self.max_failures:
            return Verdict.FAILED
        ready = self.counts()[VmState.READY]
        return Verdict.REACHED if ready == self.target == self.live() else Verdict.WAITING

    def summary(self) -> str:
        """One line such as `2/3 ready (1 booting)`."""
        counts = self.counts()
        waiting = [s for s in VmState if s in LIVE_STATES and s is not VmState.READY and counts[s]]
        others = [f"{counts[s]} {s.value}" for s in waiting]
        extra = f" ({', '.join(others)})" if others else ""
        failed = f", {len(self.failures)} failed" if self.failures else ""
        return f"{counts[VmState.READY]}/{self.target} ready{extra}{failed}"
