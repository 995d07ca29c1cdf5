"""Liveness: a ready VM the balancers agree is unhealthy, or libvirt reports paused, for too long is replaced.

The balancers already eject a VM whose checks or requests fail, and say so in their reports
(`routable`), but an ejected VM still counted as capacity and was never replaced. Kubernetes
restarts a pod that fails its liveness probe; an AWS Auto Scaling group replaces an instance that
fails its load balancer's health check. Here, each evaluation:

- `observe` marks a ready VM sick when at least `unhealthy_quorum` of the live balancers that
  know it report it unroutable for its health, or when its provisioner says libvirt reports it
  paused (a hung guest, a pause on a disk I/O error: it serves nothing, and libvirt says so plainly
  where the balancers only see checks time out), and forgets the mark as soon as neither holds;
- `choose` picks at most one VM sick for `unhealthy_replace_after_s`, no sooner than
  `unhealthy_replace_interval_s` after the last one, and none at all while more than
  `unhealthy_hold_share` of the ready VMs are sick at once: a bad template or a dead upstream
  makes every VM fail, and destroying them all would not help.

A host whose provisioner answers no list for `host_lost_after_s` while another one does is lost
(`lost_hosts`): its VMs no longer count, so their successors are created on the other hosts at
once, and nothing is sent to it. When it answers again its VMs count again, and the surplus is
drained like any other: never doubled. Silence from every host at once is the scaler's own
trouble (NATS), not the hosts', and writes nothing off.

The reconciler destroys the chosen VM without a drain (nothing routes to it) and, since it no
longer counts, creates its replacement in the same evaluation, the create first. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import replace

from services.scaler.core.model import FleetState
from shared.contract.events import VmState


def lost_hosts(state: FleetState) -> frozenset[str]:
    """Hosts silent for `host_lost_after_s` longer than the freshest one."""
    after = state.policy.host_lost_after_s
    if after <= 0 or not state.host_seen:
        return frozenset()
    freshest = max(state.host_seen.values())
    return frozenset(host for host, seen in state.host_seen.items() if freshest - seen > after)


def verdict(state: FleetState, vm: str, now: float) -> bool:
    """Whether enough of the live balancers that know `vm` call it unhealthy."""
    knowing = [b for b in state.balancers.values() if b.live(now) and vm in b.outstanding]
    if not knowing:
        return False
    against = sum(vm in b.unroutable for b in knowing)
    return against >= state.policy.unhealthy_quorum * len(knowing)


def observe(state: FleetState, now: float) -> FleetState:
    """Start or clear each ready VM's sick mark from the balancers' latest verdicts and libvirt's pauses.

    Only ready VMs: a pooled VM is paused on purpose and unroutable everywhere, and is never sick.
    """
    sick: dict[str, float] = {}
    lost = lost_hosts(state)
    for vm in state.vms.values():
        if vm.host in lost:
            continue  # written off with its host: replaced without a destroy nobody would answer
        if vm.state is VmState.READY and vm.name not in state.drains and (vm.paused or verdict(state, vm.name, now)):
            sick[vm.name] = state.sick_since.get(vm.name, now)
    return replace(state, sick_since=sick) if sick != state.sick_since else state


def choose(state: FleetState, now: float) -> tuple[str | None, str]:
    """The VM to replace now (or None) and a note saying why, or why not ("" when nothing is sick)."""
    policy = state.policy
    if not state.sick_since or policy.unhealthy_replace_after_s <= 0:
        return None, ""
    lost = lost_hosts(state)
    ready = sum(vm.state is VmState.READY and vm.name not in state.drains and vm.host not in lost
                for vm in state.vms.values())
    if len(state.sick_since) > policy.unhealthy_hold_share * ready:
        return None, (f"{len(state.sick_since)} of {ready} ready VMs unhealthy at once: replacing none "
                      f"(above unhealthy_hold_share {policy.unhealthy_hold_share:g}; a fleet-wide fault)")
    due = sorted((since, name) for name, since in state.sick_since.items()
                 if now - since >= policy.unhealthy_replace_after_s)
    if not due:
        return None, f"unhealthy: {', '.join(sorted(state.sick_since))} (replaced after "\
                     f"{policy.unhealthy_replace_after_s:g} s)"
    wait = state.last_replaced + policy.unhealthy_replace_interval_s - now
    if wait > 0:
        return None, f"unhealthy: {due[0][1]} waits {wait:.1f} s for the replacement rate limit"
    since, name = due[0]
    return name, f"replacing {name}: {_ailment(state, name)} for {now - since:.0f} s"


def _ailment(state: FleetState, name: str) -> str:
    """What is wrong with a sick VM, in the words of the decision's reason (a pause is the plainer fact)."""
    vm = state.vms.get(name)
    return "paused in libvirt" if vm is not None and vm.paused else "unhealthy on the balancers"
