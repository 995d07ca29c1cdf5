"""The warm pool: paused VMs on every live host, so a scale-out resumes one instead of booting.

How many per host (`per_host`): `pool_size`, or, where `pool_share` asks for more, that share of
the desired fleet spread over the live hosts (a pool that grows with the fleet, so a burst on a
big fleet finds as large a share of it waiting as one on a small fleet). A share-sized pool
sheds VMs only past twice its size (`SHED_AT`): a fleet that wobbles by a VM or two would
otherwise boot a pool VM and destroy it again with every wobble.

A pooled VM was cloned, booted and checked once, then paused by its provisioner; a plain create
on that host resumes it (seconds, where a boot takes tens of seconds), so placement sends
creates to hosts with a spare one first. Each evaluation, after the capacity creates have had
their pick of the room (a refill never delays one), `plan` says per live, not lost host:

- surplus (`pool_size` lowered, or a share's pool past `SHED_AT`): destroy pooled VMs without a
  drain (nothing routes to them), oldest first, but not while a create placed there may be taking one of them;
- stale: one pooled VM paused longer than `pool_max_age_s` (its DHCP lease and clock go stale)
  is destroyed, and thereby replaced, one at a time per host: none while another of its pool is
  still being destroyed, so the rest of the pool stays warm meanwhile;
- deficit: pool creates (`CreateCommand(pooled=True)`) to that host, as many as it has places
  for; VMs booting for the pool and pool creates not answered yet count towards the pool.

Pooled VMs are never capacity (`VmView.capacity`), never drained and never judged sick; the
size is the policy's alone, so a scale to 0 keeps `pool_size` and `pool_size=0` (and no share) removes it. Pool
creates share the failure backoff with capacity creates; after a failure, one create at a time
covers both, and capacity goes first. Pure.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from services.scaler.core.model import FleetState, VmView
from services.scaler.core.placement import rooms
from shared.contract.events import VmState
from shared.contract.policy import ScalingPolicy


@dataclass(frozen=True)
class PoolPlan:
    """What the pool needs this evaluation: VMs to destroy, a host per pool create, and why in words."""

    discard: tuple[str, ...] = ()
    refill: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


SHED_AT = 2.0
"""A share-sized pool keeps its VMs until it holds this many times what the share asks for."""


@dataclass(frozen=True)
class Size:
    """One host's pool size: what to fill it to, and the most it keeps before shedding."""

    fill: int
    keep: int


def per_host(policy: ScalingPolicy, desired: int, hosts: int, foreseen: int = 0) -> Size:
    """The pool each of `hosts` live hosts keeps: `pool_size`, or `pool_share` of the desired fleet where larger,
    or what the forecast's rise asks for (`predict`, within `pool_max`) where larger still."""
    if foreseen > 0:
        plain = per_host(policy, desired, hosts)
        return Size(max(plain.fill, foreseen), max(plain.keep, foreseen))
    if policy.pool_share <= 0 or hosts <= 0:
        return Size(policy.pool_size, policy.pool_size)
    share = policy.pool_share * desired / hosts
    fill, keep = math.ceil(share - 1e-9), math.ceil(SHED_AT * share - 1e-9)
    return Size(max(policy.pool_size, fill), max(policy.pool_size, keep))


def members(state: FleetState, host: str) -> list[VmView]:
    """The host's pool, oldest first: pooled VMs and VMs booting for the pool, none being destroyed."""
    mine = [vm for vm in state.vms.values() if vm.host == host and vm.in_pool and vm.name not in state.drains]
    return sorted(mine, key=lambda vm: (vm.created, vm.name))


def counts(state: FleetState) -> dict[str, tuple[int, int]]:
    """Per host with a pool: (pooled VMs, VMs booting for it or asked for with no answer yet)."""
    pooled, coming = Counter[str](), Counter[str]()
    for vm in state.vms.values():
        if vm.host is not None and vm.in_pool:
            (pooled if vm.state is VmState.POOLED else coming)[vm.host] += 1
    coming.update(host for request_id, host in state.placed.items() if request_id in state.pool_pending)
    return {host: (pooled[host], coming[host]) for host in sorted(pooled.keys() | coming.keys())}


def plan(state: FleetState, now: float, capacity_short: bool) -> PoolPlan:
    """Destroys and pool creates that bring every live host's pool to `pool_size` of fresh VMs.

    `capacity_short`: the fleet still misses capacity after this evaluation's creates; after a
    failure, when creates go one at a time, the refill waits for it.
    """
    if not state.hosts:
        return PoolPlan()  # no host known by name (no list yet, or an older provisioner): no pool to keep
    discard: list[str] = []
    notes: list[str] = []
    deficits: dict[str, int] = {}
    live = sorted(rooms(state))
    size = per_host(state.policy, state.desired, len(live), state.forecast.pool)
    for host in live:
        gone, note, deficit = _host(state, host, now, size)
        discard += gone
        notes += [note] if note else []
        if deficit > 0:
            deficits[host] = deficit
    refill, why = _refill(state, deficits, now, capacity_short)
    return PoolPlan(tuple(discard), refill, tuple(notes) + ((why,) if why else ()))


def _host(state: FleetState, host: str, now: float, size: Size) -> tuple[list[str], str, int]:
    """One host's pool: the VMs to destroy, a note when there are any, and how many it then lacks."""
    mine = members(state, host)
    asked = sum(state.placed.get(request_id) == host for request_id in state.pool_pending)
    taking = any(state.placed.get(request_id) == host for request_id in state.pending)
    surplus = len(mine) + asked - size.keep
    if surplus > 0:
        if taking:
            return [], "", 0  # a create placed here may be resuming one of them: not the moment to destroy
        gone = [vm.name for vm in mine[:surplus]]
        return gone, f"pool: removing {', '.join(gone)} on {host} ({_kept(state.policy, size)})" if gone else "", 0
    stale = _stale(state, host, mine, now)
    if stale is not None and not taking:
        paused = now - stale.since
        note = f"pool: recycling {stale.name} (paused {paused:.0f} s > pool_max_age_s {state.policy.pool_max_age_s:g})"
        return [stale.name], note, size.fill - len(mine) - asked + 1
    return [], "", size.fill - len(mine) - asked


def _kept(policy: ScalingPolicy, size: Size) -> str:
    """Words for the size a pool is kept at: the policy's `pool_size`, or the share's."""
    if size.keep == policy.pool_size:
        return f"pool_size {policy.pool_size}"
    return f"pool_share {policy.pool_share:g}: {size.fill} per host, kept up to {size.keep}"


def _stale(state: FleetState, host: str, mine: list[VmView], now: float) -> VmView | None:
    """The host's pooled VM paused the longest beyond `pool_max_age_s`, unless one of its pool is being destroyed."""
    if any(vm.host == host and vm.in_pool for name in state.drains if (vm := state.vms.get(name)) is not None):
        return None
    old = [vm for vm in mine if vm.state is VmState.POOLED and now - vm.since > state.policy.pool_max_age_s]
    return min(old, key=lambda vm: (vm.since, vm.name), default=None)


def _refill(
    state: FleetState, deficits: dict[str, int], now: float, capacity_short: bool
) -> tuple[tuple[str, ...], str]:
    """A host per pool create to send now, within each host's places and the failure backoff."""
    if not deficits:
        return (), ""
    failures = state.failures
    ready_at = failures.next_create_at(state.policy)
    if now < ready_at:  # said once: a fleet short of capacity says it backs off already
        why = f"pool: refill backing off {ready_at - now:.1f} s after {failures.count} failure(s)"
        return (), "" if capacity_short else why
    if failures.count and (capacity_short or state.pending or state.pool_pending):
        return (), ""  # one create at a time after failures, and a capacity create first
    room = rooms(state)
    hosts = [host for host, deficit in deficits.items() for _ in range(min(deficit, room[host].places))]
    hosts = hosts[:1] if failures.count else hosts
    if not hosts:
        return (), ""
    per_host = Counter(hosts)
    done = ", ".join(f"{n} on {host}" for host, n in per_host.items())
    return tuple(hosts), f"pool: refilling {done}"
