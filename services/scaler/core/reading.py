"""Reading the load snapshot: the signal's per-VM value over warm VMs, and the fleet-wide demand.

Warm VMs only: a VM still booting or warming has no load yet, and averaging it in would read as
"the fleet is idle". Pure.
"""

from __future__ import annotations

from services.scaler.core.model import LoadView, VmView
from shared.contract.policy import Signal


def observe(signal: Signal, warm: list[VmView], load: LoadView) -> float | None:
    """The per-VM value of `signal` over warm VMs; None when the snapshot has nothing for them."""
    views = [load.vms[vm.name] for vm in warm if vm.name in load.vms]
    if not views:
        return _fleet_wide(signal, len(warm), load)
    if signal is Signal.OUTSTANDING:
        return sum(v.outstanding for v in views) / len(views)
    if signal is Signal.RPS:
        return sum(v.rps for v in views) / len(views)
    if signal is Signal.FLOWS:
        return sum(v.flows for v in views) / len(views)
    return _weighted_p95([(v.p95_s, v.rps) for v in views]) or load.p95_s


def _fleet_wide(signal: Signal, warm: int, load: LoadView) -> float | None:
    """Without per-VM figures, spread the fleet totals over the warm VMs."""
    if warm == 0:
        return None
    if signal is Signal.OUTSTANDING:
        return load.outstanding / warm
    if signal is Signal.RPS:
        return load.rps / warm
    if signal is Signal.FLOWS:
        return load.flows / warm
    return load.p95_s


def _weighted_p95(pairs: list[tuple[float | None, float]]) -> float | None:
    """Request-weighted mean of per-VM p95 latencies (VMs without a figure are skipped)."""
    known = [(p95, max(rps, 1e-9)) for p95, rps in pairs if p95 is not None]
    if not known:
        return None
    return sum(p * w for p, w in known) / sum(w for _, w in known)


def demand(signal: Signal, observed: float, counted: int, load: LoadView) -> float:
    """The fleet-wide amount of the signal: totals for rates, in-flight requests and flows, latency x VMs otherwise."""
    total = fleet_total(signal, load)
    return observed * counted if total is None else total


def fleet_total(signal: Signal, load: LoadView) -> float | None:
    """The fleet-wide total of a signal that adds up over VMs (None: p95 latency, which does not)."""
    if signal is Signal.RPS:
        return load.rps
    if signal is Signal.OUTSTANDING:
        return load.outstanding
    if signal is Signal.FLOWS:
        return load.flows
    return None
