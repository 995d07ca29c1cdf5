"""Desired size vs the VMs that exist: which creates, drains and destroys to send now.

Pure: the leader calls it after every decision with the state and `now`. VMs in flight
(requested, cloning, booting, or a create with no reply yet) count, so a slow boot never
leads to a second create; VMs being drained do not count, they are on their way out, and
neither do the warm pool's. Which host each create goes to is `placement`'s answer; what each
host's pool needs, once the capacity creates are placed, is `pool`'s.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from services.scaler.core.liveness import choose, lost_hosts, observe
from services.scaler.core.model import (
    POOL_KIND,
    Command,
    CreateCommand,
    DestroyCommand,
    DrainCommand,
    DrainView,
    FleetState,
    VmView,
)
from services.scaler.core.placement import place
from services.scaler.core.pool import plan
from shared.contract.events import VmState

MATCHED = "fleet matches desired size"

DESTROY_RETRY_S = 15.0
"""A destroy with no answer (no `destroyed` event, no reply) is sent again after this long."""


def counted(state: FleetState) -> list[VmView]:
    """VMs that are, or will be, serving and are not leaving (nor on a lost host); the pool's are not serving."""
    leaving = set(state.drains) | state.drain_requests | state.retiring
    lost = lost_hosts(state)
    return [vm for vm in state.vms.values() if vm.capacity and vm.name not in leaving and vm.host not in lost]


def outstanding(state: FleetState, vm: str, now: float) -> int:
    """Requests in flight to `vm` across every live balancer."""
    return sum(b.outstanding.get(vm, 0) for b in state.balancers.values() if b.live(now))


def pick_victims(state: FleetState, count: int, now: float) -> list[VmView]:
    """Scale-in order: VMs written off with a lost host that came back first, then those of a version a rollout
    replaces (`outdated`), then VMs not serving yet,
    then fewest outstanding requests, then the one on the host with the most VMs, the oldest on a tie.

    A VM still booting serves nothing: removing it costs no capacity, while draining a ready VM
    to keep a newer booting one would leave the fleet short until that one is up. Among equally
    idle VMs, taking from the fullest host keeps the hosts even, so one host's loss costs the
    fewest VMs; victims are chosen one at a time, each leaving its host one VM smaller.
    """
    left = counted(state)
    busy = {vm.name: outstanding(state, vm.name, now) for vm in left}
    per_host = Counter(vm.host for vm in left)
    per_host.update(host for request_id, host in state.placed.items() if request_id in state.pending)

    def rank(vm: VmView) -> tuple[bool, bool, bool, int, int, float, str]:
        written_off = vm.name in state.written_off  # replaced while its host was lost: the surplus itself
        current = vm.name not in state.outdated  # a rollout replaces the outdated ones anyway
        return (not written_off, current, vm.state is VmState.READY, busy[vm.name], -per_host[vm.host], vm.created,
                vm.name)

    chosen: list[VmView] = []
    for _ in range(min(count, len(left))):
        victim = min(left, key=rank)
        chosen.append(victim)
        left.remove(victim)
        per_host[victim.host] -= 1
    return chosen


def _next_id(state: FleetState, kind: str) -> tuple[FleetState, str]:
    """A request id unique per leader term: the epoch and a counter."""
    seq = state.seq + 1
    return replace(state, seq=seq), f"{state.leader}-e{state.epoch}-{kind}{seq}"


def reconcile(state: FleetState, now: float) -> tuple[tuple[Command, ...], FleetState, str]:
    """Commands that move the fleet towards `state.desired`, the updated state, and a note."""
    commands: list[Command] = []
    state = _collect_failed(state, now)
    state = _write_off(state)
    state, sick_note = _replace_sick(state, now)
    state = _start_drains(state, sorted(_orphans(state) | (state.drain_requests - set(state.drains))), now, commands)
    state, note = _resize(state, now, commands)
    state, pool_note = _tend_pool(state, now, commands)
    state = _finish_drains(state, now, commands)
    state = _settle_written_off(state)
    for extra in (sick_note, _lost_note(state), pool_note):
        if extra:
            note = extra if note == MATCHED else f"{note}; {extra}"
    return tuple(commands), state, note


def _write_off(state: FleetState) -> FleetState:
    """Remember the VMs of lost hosts: their successors are made now, so they are the ones to remove later."""
    lost = lost_hosts(state)
    stranded = frozenset(vm.name for vm in state.vms.values() if vm.host in lost)
    written_off = (state.written_off | stranded) & frozenset(state.vms)
    return state if written_off == state.written_off else replace(state, written_off=written_off)


def _settle_written_off(state: FleetState) -> FleetState:
    """Once their host is back, the scale-in of this evaluation has had its pick: the mark is spent."""
    lost = lost_hosts(state)
    kept = frozenset(name for name in state.written_off if (vm := state.vms.get(name)) is not None and vm.host in lost)
    return state if kept == state.written_off else replace(state, written_off=kept)


def _lost_note(state: FleetState) -> str:
    lost = lost_hosts(state)
    if not lost:
        return ""
    stranded = sum(vm.host in lost for vm in state.vms.values())
    return f"host {', '.join(sorted(lost))} silent: its {stranded} VM(s) written off and replaced elsewhere"


def _replace_sick(state: FleetState, now: float) -> tuple[FleetState, str]:
    """Destroy (without a drain) the unhealthy VM `liveness` chooses; `_resize` then creates its successor."""
    state = observe(state, now)
    sick, note = choose(state, now)
    if sick is None:
        return state, note
    rest = {name: since for name, since in state.sick_since.items() if name != sick}
    return replace(_discard(state, [sick], now), sick_since=rest, last_replaced=now), note


def _resize(state: FleetState, now: float, commands: list[Command]) -> tuple[FleetState, str]:
    """Create the missing VMs, or drain the surplus."""
    have = len(counted(state)) + len(state.pending)
    if have < state.desired:
        return _create(state, state.desired - have, now, commands)
    surplus = have - state.desired
    if surplus > 0:
        chosen = pick_victims(state, surplus, now)
        victims = [vm.name for vm in chosen]
        state = _discard(state, [vm.name for vm in chosen if vm.state is not VmState.READY], now)
        state = _start_drains(state, victims, now, commands)
        return state, f"draining {', '.join(victims)}" if victims else "surplus is still being created"
    return state, MATCHED


def _tend_pool(state: FleetState, now: float, commands: list[Command]) -> tuple[FleetState, str]:
    """Destroy the pool's surplus and stale VMs, and refill each host's pool in the room the capacity creates left."""
    short = len(counted(state)) + len(state.pending) < state.desired
    pool = plan(state, now, capacity_short=short)
    state = _discard(state, list(pool.discard), now)
    pool_pending, placed = dict(state.pool_pending), dict(state.placed)
    for host in pool.refill:
        state, request_id = _next_id(state, POOL_KIND)
        pool_pending[request_id] = now
        placed[request_id] = host
        commands.append(CreateCommand(request_id, host, pooled=True))
    return replace(state, pool_pending=pool_pending, placed=placed), "; ".join(pool.notes)


def _create(state: FleetState, missing: int, now: float, commands: list[Command]) -> tuple[FleetState, str]:
    """Ask for `missing` VMs, or one at a time after failures, and none while backing off."""
    ready_at = state.failures.next_create_at(state.policy)
    if now < ready_at:
        return state, f"{missing} missing; backing off {ready_at - now:.1f} s after {state.failures.count} failure(s)"
    if state.failures.count and state.pending:
        return state, f"{missing} missing; one create at a time after failures"
    count = 1 if state.failures.count else missing
    hosts, short = place(state, count)
    pending, placed = dict(state.pending), dict(state.placed)
    for host in hosts:
        state, request_id = _next_id(state, "c")
        pending[request_id] = now
        if host is not None:
            placed[request_id] = host
        commands.append(CreateCommand(request_id, host))
    note = f"creating {len(hosts)}" if not short else f"creating {len(hosts)}; {short}"
    return replace(state, pending=pending, placed=placed), note


def _start_drains(state: FleetState, names: list[str], now: float, commands: list[Command]) -> FleetState:
    """Drain each named VM through its provisioner; it is destroyed once the live balancers all report."""
    drains = dict(state.drains)
    live = frozenset(b.id for b in state.balancers.values() if b.live(now))
    timeout = state.policy.drain_timeout_s
    for name in names:
        vm = state.vms.get(name)
        if vm is None or name in drains:
            continue
        state, request_id = _next_id(state, "d")
        drains[name] = DrainView(vm=name, started=now, deadline=now + timeout, waiting=live)
        commands.append(DrainCommand(vm=name, deadline_s=timeout, request_id=request_id, host=vm.host))
    return replace(state, drains=drains)


def drain_failed(state: FleetState, name: str) -> FleetState:
    """The provisioner did not take the drain (down, timed out, refused): forget that it started.

    No balancer was told to drain the VM, so it must not be destroyed at the drain's deadline; without
    the drain it is a candidate again, and the next reconcile asks again (a commanded drain or one found
    already `draining`) or picks the surplus afresh. A drain whose destroy is out is left to finish.
    """
    drain = state.drains.get(name)
    if drain is None or drain.destroy_sent_at is not None:
        return state
    return replace(state, drains={k: v for k, v in state.drains.items() if k != name})


def _orphans(state: FleetState) -> set[str]:
    """VMs already draining with no drain of ours (a deposed leader started it): finish the job."""
    return {vm.name for vm in state.vms.values() if vm.state is VmState.DRAINING and vm.name not in state.drains}


def _collect_failed(state: FleetState, now: float) -> FleetState:
    """Failed VMs go straight to destroy."""
    return _discard(state, [vm.name for vm in state.vms.values() if vm.state is VmState.FAILED], now)


def _discard(state: FleetState, names: list[str], now: float) -> FleetState:
    """Destroy without a drain (nothing routes to a failed or still booting VM): a drain already due."""
    fresh = [name for name in names if name not in state.drains]
    if not fresh:
        return state
    due = {name: DrainView(vm=name, started=now, deadline=now, waiting=frozenset()) for name in fresh}
    return replace(state, drains=dict(state.drains) | due)


def _finish_drains(state: FleetState, now: float, commands: list[Command]) -> FleetState:
    """Destroy each drained VM (every live balancer reported, or its deadline passed)."""
    live = {b.id for b in state.balancers.values() if b.live(now)}
    drains = dict(state.drains)
    for name, drain in state.drains.items():
        vm = state.vms.get(name)
        if vm is None or vm.host is None or not _due(drain, live, now):
            continue
        state, request_id = _next_id(state, "x")
        drains[name] = replace(drain, destroy_sent_at=now)
        commands.append(DestroyCommand(vm=name, host=vm.host, request_id=request_id))
    return replace(state, drains=drains)


def _due(drain: DrainView, live: set[str], now: float) -> bool:
    """Drained (or out of time) and not already being destroyed recently."""
    if drain.destroy_sent_at is not None:
        return now - drain.destroy_sent_at >= DESTROY_RETRY_S
    return not (drain.waiting & live) or now >= drain.deadline
