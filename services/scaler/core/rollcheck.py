"""Is the new template version worse than the old one? The rollout's rollback rule, and its evidence.

A version is judged against the version it replaces, on the same load at the same time, never
against absolute numbers: a slow upstream or a bad hour makes both versions slow, and a fleet that
always answers 2% errors should not roll back for that. Pure.

- **Readiness and identity**: a VM of the new version that fails (its provisioner gives up on its
  readiness check, or it answers as another VM) rolls back at once; so do `CREATE_FAILURES` creates
  of it failing in a row (the version missing on a host, a clone that cannot start).
- **Ejected**: a VM of the new version the balancers agree is unhealthy (`FleetState.sick_since`,
  see `liveness`) for `EJECTED_AFTER_S`.
- **Errors and latency**: each version's requests, errors and p95 latency are summed from the load
  snapshots (`observe`) while both serve. Once each has served `min_requests`, the new version
  rolls back when its error share is above the old one's by more than `ERROR_MARGIN` or the old
  share itself (whichever is larger), or its request-weighted p95 is above the old one's by more
  than `LATENCY_MARGIN` of it plus `LATENCY_FLOOR_S`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from services.scaler.core.model import FleetState
from shared.contract.events import LIVE_STATES, VmState
from shared.contract.load import VmLoad
from shared.contract.rollout import RolloutPhase, RolloutState, VersionCount, VersionHealth

CREATE_FAILURES = 3
EJECTED_AFTER_S = 5.0
ERROR_MARGIN = 0.01
LATENCY_MARGIN = 0.5
LATENCY_FLOOR_S = 0.005
WATCHED = frozenset({RolloutPhase.CANARY, RolloutPhase.BAKING, RolloutPhase.ROLLING, RolloutPhase.PAUSED})
"""Phases in which the new version is judged (a rollback is not judged again)."""


def verdict(rollout: RolloutState, fleet: FleetState, versions: Mapping[str, str | None], now: float) -> str | None:
    """Why the new version must be rolled back, in words; None while nothing says so."""
    if rollout.phase not in WATCHED:
        return None
    new = rollout.new_version
    mine = [vm for vm in fleet.vms.values() if versions.get(vm.name) == new]
    failed = sorted(vm.name for vm in mine if vm.state is VmState.FAILED)
    if failed:
        return f"{failed[0]} of {new} failed (readiness or identity)"
    started = rollout.started_at.timestamp()
    if fleet.failures.count >= CREATE_FAILURES and fleet.failures.last_at >= started:
        return f"{fleet.failures.count} creates of {new} failed in a row"
    sick = sorted((since, vm.name) for vm in mine if (since := fleet.sick_since.get(vm.name)) is not None)
    if sick and now - sick[0][0] >= EJECTED_AFTER_S:
        return f"{sick[0][1]} of {new} unhealthy on the balancers for {now - sick[0][0]:.0f} s"
    return compare(rollout)


def health(rollout: RolloutState, version: str | None) -> VersionHealth:
    """One version's sums so far (zero when it served nothing yet)."""
    return next((h for h in rollout.health if h.version == version), VersionHealth(version=version))


def compare(rollout: RolloutState) -> str | None:
    """The error and latency rule (see the module's docstring); None without enough requests on both sides."""
    old, new = health(rollout, rollout.old_version), health(rollout, rollout.new_version)
    need = rollout.settings.min_requests
    if old.requests < need or new.requests < need:
        return None
    if new.error_share > old.error_share + max(ERROR_MARGIN, old.error_share):
        return (f"{rollout.new_version} answers {new.error_share:.1%} errors against {old.error_share:.1%} "
                f"on {rollout.old_version or 'the old version'} ({new.requests:.0f} and {old.requests:.0f} requests)")
    if new.p95_s > old.p95_s * (1 + LATENCY_MARGIN) + LATENCY_FLOOR_S:
        return (f"{rollout.new_version} p95 {new.p95_s * 1000:.0f} ms against {old.p95_s * 1000:.0f} ms "
                f"on {rollout.old_version or 'the old version'}")
    return None


def observe(rollout: RolloutState, vms: Sequence[VmLoad], seconds: float,
            versions: Mapping[str, str | None]) -> RolloutState:
    """Add one load snapshot's `seconds` of each version's traffic to its sums (while the rollout is judged)."""
    if rollout.phase not in WATCHED or seconds <= 0:
        return rollout
    sums = {v: health(rollout, v) for v in (rollout.old_version, rollout.new_version)}
    for load in vms:
        version = versions.get(load.vm, "?")
        if version == "?" or version not in sums or load.rps <= 0:
            continue
        h, served = sums[version], load.rps * seconds
        sums[version] = h.model_copy(update={
            "requests": h.requests + served, "errors": h.errors + served * load.error_rate,
            "latency_s": h.latency_s + served * (load.p95_s or 0.0),
        })
    return rollout.model_copy(update={"health": list(sums.values())})


def counts(fleet: FleetState, versions: Mapping[str, str | None]) -> list[VersionCount]:
    """The fleet's live VMs per version: ready, starting, pooled, leaving."""
    tally: dict[str | None, dict[str, int]] = {}
    for vm in fleet.vms.values():
        if vm.state not in LIVE_STATES:
            continue
        row = tally.setdefault(versions.get(vm.name), {"ready": 0, "starting": 0, "pooled": 0, "leaving": 0})
        row[_kind(fleet, vm.name, vm.state, vm.in_pool)] += 1
    return [VersionCount(version=v, **row) for v, row in sorted(tally.items(), key=lambda kv: kv[0] or "")][:64]


def _kind(fleet: FleetState, name: str, state: VmState, pool: bool) -> str:
    if state is VmState.DRAINING or name in fleet.drains or name in fleet.drain_requests:
        return "leaving"
    if pool:
        return "pooled"
    return "ready" if state is VmState.READY else "starting"
