"""How long this fleet's VMs take to become ready, measured per host: the boot lead's evidence.

A scale-out helps only once its VMs are ready, so a fleet sized for the load of *now* leaves a
rise unserved for a boot's length. The scaler measures that length on its own VMs, by its own
clock (the provisioners' clocks may be skewed), in two kinds:

- a **boot**: from the VM's first news (its create reply or first event) to `ready`; a VM
  booted for the warm pool counts when it is `pooled` (booted and checked once, as `ready` is);
- a **resume**: from the news that a VM left the pool (`pooled` -> `booting`) to `ready`.

The last `KEEP` of each kind are kept per host; `lead` reads a percentile of them, or a
documented default while nothing is measured. Pure: `note` is fed every state change (the
reducers in `track` call it) and returns the new record.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from shared.contract.events import VmState


class Kind(StrEnum):
    """Which wait a measurement is: a cold boot or a resume from the warm pool."""

    BOOT = "boot"
    RESUME = "resume"


KEEP = 50
"""Measurements kept per host and kind: enough for a 90th percentile, few enough to follow a change."""
MARKS_KEPT = 1000
"""VMs whose wait is being timed (a VM destroyed before it was ready leaves its mark behind: bounded)."""
DEFAULT_S: Mapping[Kind, float] = {Kind.BOOT: 20.0, Kind.RESUME: 3.0}
"""The lead before anything is measured: a typical clone-and-boot, a typical resume and check."""
UNHOST = ""
"""The host key of a VM whose host is not known (it only feeds the fleet-wide figure)."""

_STARTS = frozenset({VmState.REQUESTED, VmState.CLONING, VmState.BOOTING})
_ENDS = frozenset({VmState.DRAINING, VmState.FAILED, VmState.DESTROYED})


@dataclass(frozen=True)
class BootTimes:
    """Recent waits per (host, kind), and the VMs being timed now (name -> kind, start)."""

    samples: Mapping[tuple[str, Kind], tuple[float, ...]] = field(default_factory=dict)
    timing: Mapping[str, tuple[Kind, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Lead:
    """How far ahead a scale-out must look: seconds, the kind of wait, and where the figure comes from."""

    seconds: float
    kind: Kind = Kind.BOOT
    basis: str = "no lead"


NO_LEAD = Lead(0.0)


def note(times: BootTimes, name: str, host: str | None, was: VmState | None, state: VmState, now: float) -> BootTimes:
    """The record after `name` went from `was` (None: first news) to `state` at local time `now`."""
    timed = times.timing.get(name)
    if state in (VmState.READY, VmState.POOLED) and timed is not None:
        kind, start = timed
        rest = {k: v for k, v in times.timing.items() if k != name}
        if state is VmState.POOLED and kind is Kind.RESUME:
            return replace(times, timing=rest)  # back into the pool: no wait anyone was served by
        return replace(record(times, host, kind, now - start), timing=rest)
    if state is VmState.BOOTING and was is VmState.POOLED:
        return _mark(times, name, Kind.RESUME, now)
    if was is None and state in _STARTS:
        return _mark(times, name, Kind.BOOT, now)
    if state in _ENDS and timed is not None:
        return replace(times, timing={k: v for k, v in times.timing.items() if k != name})
    return times


def _mark(times: BootTimes, name: str, kind: Kind, now: float) -> BootTimes:
    """Start timing `name` (the oldest marks go beyond `MARKS_KEPT`)."""
    timing = {k: v for k, v in times.timing.items() if k != name} | {name: (kind, now)}
    if len(timing) > MARKS_KEPT:
        timing = dict(list(timing.items())[-MARKS_KEPT:])
    return replace(times, timing=timing)


def record(times: BootTimes, host: str | None, kind: Kind, seconds: float) -> BootTimes:
    """One more measured wait on `host` (the last `KEEP` per host and kind are kept)."""
    key = (host or UNHOST, kind)
    kept = (*times.samples.get(key, ()), max(0.0, seconds))[-KEEP:]
    return replace(times, samples=dict(times.samples) | {key: kept})


def percentile(values: Collection[float], share: float) -> float:
    """The nearest-rank percentile (`share` 0..1) of `values`, which must not be empty."""
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(share * len(ordered) - 1e-9)))
    return ordered[rank - 1]


def lead(times: BootTimes, share: float, pooled: Collection[str], hosts: Collection[str]) -> Lead:
    """The wait the next scale-out faces: a resume where a pooled VM is spare, else a boot.

    `pooled`: hosts with a spare pooled VM (a create there resumes it); `hosts`: the hosts a
    create may go to. Each candidate host's figure is the `share` percentile of its own waits,
    of every host's waits while it has none, or the default while nothing is measured; the
    lead is the longest of them, since placement, not the autoscaler, picks the host.
    """
    if share <= 0:
        return NO_LEAD
    kind = Kind.RESUME if pooled else Kind.BOOT
    every = [s for (_, k), values in times.samples.items() if k is kind for s in values]

    def figure(host: str) -> tuple[float, str]:
        own = times.samples.get((host, kind), ()) if host != UNHOST else ()
        return percentile(own or every or (DEFAULT_S[kind],), share), host if own else UNHOST

    seconds, source = max((figure(host) for host in sorted(pooled or hosts) or [UNHOST]), key=lambda f: f[0])
    return Lead(seconds, kind, _basis(times, share, kind, source, len(every)))


def _basis(times: BootTimes, share: float, kind: Kind, host: str, measured: int) -> str:
    """Where a lead comes from, in words: one host's waits, every host's (`measured` of them), or the default."""
    own = times.samples.get((host, kind), ())
    if host != UNHOST and own:
        return f"p{share * 100:.0f} of {len(own)} {kind.value}s on {host}"
    if measured:
        return f"p{share * 100:.0f} of {measured} {kind.value}s, all hosts"
    return f"default {DEFAULT_S[kind]:g} s {kind.value}, none measured yet"
