"""What the fleet looks like (VM states, desired size, scaling decisions) and its recent history.

Pure and bounded: VM entries for destroyed or failed VMs are forgotten after a while, decisions
and history points live in ring buffers. The dashboard and `/metrics` read from here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime

from shared.contract.events import ScalingDecided, VmState, VmStateChanged
from shared.contract.load import FleetLoaded
from shared.contract.status import DesiredState

MAX_VMS = 10_000
"""VMs tracked at once; events about more are refused (a bound against hostile publishers)."""
GONE = frozenset({VmState.DESTROYED, VmState.FAILED})
SHOWN_STATES = tuple(s for s in VmState if s is not VmState.DESTROYED)
"""States counted in `quicfleet_vms` and on the dashboard (destroyed VMs are not in the fleet)."""


@dataclass(frozen=True)
class VmEntry:
    """The last known state of one VM; `at` is the event's own time, for ordering."""

    state: VmState
    at: datetime
    changed: float


@dataclass(frozen=True)
class HistoryPoint:
    """One dashboard sample: the fleet's load and shape at `at` (epoch seconds)."""

    at: float
    rps: float
    errors_ps: float
    error_rate: float
    outstanding: float
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None
    states: dict[str, int]
    desired: int | None


class FleetView:
    """VM states, desired size, decisions and history, fed by events and snapshots."""

    def __init__(self, history_points: int, forget_after_s: float, max_decisions: int = 100) -> None:
        self.forget_after_s = forget_after_s
        self.vms: dict[str, VmEntry] = {}
        self.desired: int | None = None
        self._desired_key: tuple[int, datetime] | None = None
        self.decisions: deque[ScalingDecided] = deque(maxlen=max_decisions)
        self.decisions_seen = 0
        self.history: deque[HistoryPoint] = deque(maxlen=max(1, history_points))

    def vm_changed(self, event: VmStateChanged, now: float) -> bool:
        """Apply a VM event unless it is older than what we know or one VM too many; say if applied."""
        known = self.vms.get(event.vm)
        if known is not None and event.at < known.at:
            return False
        if known is None and len(self.vms) >= MAX_VMS:
            return False
        self.vms[event.vm] = VmEntry(event.state, event.at, now)
        return True

    def desired_changed(self, state: DesiredState) -> bool:
        """Take the scaler's desired size unless it comes from an older epoch or update."""
        key = (state.epoch, state.updated_at)
        if self._desired_key is not None and key < self._desired_key:
            return False
        self._desired_key = key
        self.desired = state.desired
        return True

    def decided(self, decision: ScalingDecided) -> None:
        """Remember a scaling decision (bounded) for the dashboard."""
        self.decisions.append(decision)
        self.decisions_seen += 1

    def state_counts(self) -> dict[str, int]:
        """How many VMs are in each state (every state listed, destroyed ones left out)."""
        counts = {state.value: 0 for state in SHOWN_STATES}
        for entry in self.vms.values():
            if entry.state is not VmState.DESTROYED:
                counts[entry.state.value] += 1
        return counts

    def expire(self, now: float) -> list[str]:
        """Forget VMs that have been destroyed or failed for `forget_after_s`; return their names."""
        cutoff = now - self.forget_after_s
        gone = [vm for vm, e in self.vms.items() if e.state in GONE and e.changed < cutoff]
        for vm in gone:
            del self.vms[vm]
        return gone

    def record(self, snapshot: FleetLoaded) -> HistoryPoint:
        """Add one history point from a fleet snapshot and the current fleet shape."""
        point = HistoryPoint(
            at=snapshot.at.timestamp(),
            rps=snapshot.rps,
            errors_ps=snapshot.rps * snapshot.error_rate,
            error_rate=snapshot.error_rate,
            outstanding=snapshot.outstanding,
            p50_s=snapshot.p50_s,
            p95_s=snapshot.p95_s,
            p99_s=snapshot.p99_s,
            states=self.state_counts(),
            desired=self.desired,
        )
        self.history.append(point)
        return point
