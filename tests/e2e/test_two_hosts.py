"""A fleet over two hypervisor hosts: two lab namespaces, each with its own libvirtd, DHCP network
and template, routed to each other over a veth pair (`ops.lab.twohost`), one provisioner per host.

The fleet tests share one stack and one fleet view and run in file order: the fleet spreads over
both hosts, host `lab-b` is lost under steady HTTP/3 load (wire cut, provisioner killed, libvirtd
stopped) and its VM replaced on `lab-a`, then `lab-b` comes back, its stale VM counts again and
the surplus is drained away. At most 4 VMs at once (3, and the lost host's stale one, which keeps
running unseen); each host may hold 3 (`QUICFLEET_MAX_VMS`). The figures are printed at the end
of the run. A first test, with no VM, proves that a two-host lab left by a dead owner is reclaimed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from ops.lab import LabError, netns, owner, reclaim_stale
from ops.lab.twohost import TwoHostLab
from shared.bus import Bus, connect
from shared.contract.events import VmState
from shared.contract.policy import PolicyPatch, ScalingPolicy
from shared.contract.subjects import Subjects
from shared.settings import ServiceSettings
from tests.e2e.conftest import TIMINGS
from tests.e2e.fleetwatch import FleetWatch, services_answer
from tests.e2e.load import LoadRun
from tests.e2e.stack import REPO, log_lines
from tests.e2e.twohosts import HOSTS, TwoHostStack, clones, hosts_answer, ready_on
from tests.support import wait_until

in_module_loop = pytest.mark.asyncio(loop_scope="module")
"""The fleet tests share the module's event loop: the fleet view (`watch2`) lives across them."""

HOST_LOST_AFTER_S = 10.0
PREFIX = "qf2-"
"""Two-host e2e labs are `qf2-<pid>`: a run's stale one is reclaimed by the next (`reclaim_stale`)."""


@dataclass
class Scenario:
    """What the fleet tests hand on to each other, in file order."""

    run: LoadRun | None = None
    lost: dict[str, str] = field(default_factory=dict)
    """The VMs lab-b held when it was cut off (name -> address)."""


@pytest.fixture(scope="module")
def pair(e2e_workdir: Path) -> Iterator[TwoHostLab]:
    """The two-host lab for the module (stale two-host labs of a dead run are reclaimed first)."""
    reclaim_stale(PREFIX)
    lab = TwoHostLab(e2e_workdir / "two-hosts", name=f"{PREFIX}{os.getpid()}")
    lab.start()  # undoes itself on failure
    first, second = lab.costs
    TIMINGS.append(f"two hosts: first host up in {first.seconds:.1f} s; the second host (libvirtd, virtlogd,"
                   f" DHCP network, template) {second.seconds:.1f} s, {second.rss_mib:.0f} MiB RSS of daemons"
                   f" before any guest, {second.disk_mib:.0f} MiB of disk")
    try:
        yield lab
    finally:
        lab.stop()


@pytest.fixture(scope="module")
def stack2(pair: TwoHostLab, e2e_workdir: Path) -> Iterator[TwoHostStack]:
    """NATS and the services on the first host, a provisioner on each; this thread inside the first namespace."""
    running = TwoHostStack(pair, e2e_workdir / "stack-two-hosts")
    with netns.entered(pair.hosts[0].name):
        try:
            running.start()
            yield running
        finally:
            running.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def watch2(stack2: TwoHostStack) -> AsyncIterator[FleetWatch]:
    """The fleet's events for the module, once both hosts answer, under a policy that writes a host off after 10 s."""
    settings = ServiceSettings(nats_url=f"nats://127.0.0.1:{stack2.nats_port}")
    bus = Bus(await connect(settings, "quicfleet-e2e"), Subjects())
    await services_answer(bus)
    await hosts_answer(bus)
    policy = PolicyPatch(min_replicas=0, max_replicas=3, host_lost_after_s=HOST_LOST_AFTER_S, manual_hold_s=3600)
    await bus.request(bus.subjects.cmd_policy, policy, ScalingPolicy, timeout=30)
    fleet = FleetWatch(bus)
    await fleet.start()
    yield fleet
    await bus.drain()
    assert not stack2.exited(), f"a service exited: {stack2.exited()}; logs in {stack2.workdir}"


@pytest.fixture(scope="module")
def scenario(stack2: TwoHostStack, pair: TwoHostLab) -> Iterator[Scenario]:
    """The shared scenario; its load client is stopped after the module, before the stack."""
    shared = Scenario()
    yield shared
    if shared.run is not None and shared.run.process.poll() is None:
        shared.run.stop()


def _spread(watch: FleetWatch) -> dict[str, dict[str, str]]:
    """Host -> its ready VMs (name -> address), from the provisioners' events."""
    return {host: ready_on(watch, host) for host in HOSTS}


def _wall(record: dict[str, Any], key: str = "timestamp") -> float:
    return datetime.fromisoformat(str(record[key])).timestamp()


def _balancer_dropped(stack: TwoHostStack, vms: set[str], after: float) -> float | None:
    """When the balancer first took one of `vms` out of rotation (a failed check or an ejection) after `after`."""
    lines = [*log_lines(stack, "balancer", "backend.unhealthy"), *log_lines(stack, "balancer", "backend.ejected")]
    return min((_wall(r) for r in lines if r.get("backend") in vms and _wall(r) >= after), default=None)


def _retried(stack: TwoHostStack, after: float) -> list[dict[str, Any]]:
    """The balancer's access lines of requests that started after `after` and needed more than one attempt."""
    lines = log_lines(stack, "balancer", "access")
    return [r for r in lines if int(r.get("attempts") or 1) > 1 and _wall(r, "time") >= after]


def _decided(watch: FleetWatch, words: str, after: float) -> float | None:
    """When the first scaler decision whose reason holds `words` arrived after `after`."""
    return next((at for at, d in watch.decisions if at >= after and words in d.reason), None)


def _first_event(watch: FleetWatch, state: VmState, after: float) -> float | None:
    """When the first `state` event of any VM arrived after `after`."""
    return next((at for at, e in watch.arrived if at >= after and e.state is state), None)


def _ready_count(watch: FleetWatch, host: str, count: int) -> dict[str, str] | None:
    """The ready VMs on `host` once there are exactly `count` of them, else None."""
    found = ready_on(watch, host)
    return found if len(found) == count else None


def _orphans(pair: TwoHostLab, watch: FleetWatch) -> list[str]:
    """Domains and disks in either host's libvirt that are not a ready VM of the fleet on that host."""
    found = []
    for index, host in enumerate(HOSTS):
        info = pair.hosts[index].info
        domains, volumes = clones(info.libvirt_uri, info.template)
        ready = set(ready_on(watch, host))
        found += [f"{host}: domain {d}" for d in sorted(domains - ready)]
        found += [f"{host}: volume {v}" for v in sorted(volumes) if not any(v.startswith(f"{d}-") for d in ready)]
    return found


def test_a_two_host_lab_left_by_a_dead_owner_is_reclaimed_and_a_live_one_refused(e2e_workdir: Path) -> None:
    """A two-host lab whose owner runs is refused and left alone; SIGKILL the owner and the next start reclaims
    both namespaces, daemons and records, and its own stop leaves nothing."""
    name = f"{PREFIX}r{os.getpid()}"
    stale_dir, fresh_dir = e2e_workdir / "reclaim-stale", e2e_workdir / "reclaim-fresh"
    code = ("import signal, sys; from ops.lab.twohost import TwoHostLab; "
            f"TwoHostLab(sys.argv[1], {name!r}).start(); print('up', flush=True); signal.pause()")
    child = subprocess.Popen([sys.executable, "-c", code, str(stale_dir)], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        assert child.stdout is not None
        assert "up" in (line.strip() for line in child.stdout), "the owner did not start its lab"
        with pytest.raises(LabError, match=r"already exists.*running"):
            TwoHostLab(fresh_dir, name).start()
        assert netns.pids(f"{name}-a") and netns.pids(f"{name}-b"), "a refused start must leave the lab alone"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    stale = netns.pids(f"{name}-a") + netns.pids(f"{name}-b")
    assert stale, "a SIGKILLed owner leaves its lab behind"
    fresh = TwoHostLab(fresh_dir, name)
    try:
        fresh.start()
        assert fresh.linked()
        assert not [pid for pid in stale if netns.alive(pid)], "the stale lab's daemons were not ended"
    finally:
        fresh.stop()
        fresh.stop()
    assert not netns.exists(f"{name}-a") and not netns.exists(f"{name}-b")
    assert owner.read(f"{name}-a") is None and owner.read(f"{name}-b") is None


@in_module_loop
async def test_scale_one_to_three_spreads_the_fleet_over_both_hosts(
    watch2: FleetWatch, pair: TwoHostLab, stack2: TwoHostStack, scenario: Scenario
) -> None:
    """Scaling 1 -> 3 places clones on both hosts, at their host's subnet, in their host's libvirt; GETs reach all 3."""
    await watch2.scale(1)
    await watch2.settle(1)
    await watch2.scale(3)
    ready = await watch2.settle(3)
    spread = _spread(watch2)
    assert all(spread.values()), f"not spread over both hosts: {spread}"
    for index, host in enumerate(HOSTS):
        info = pair.hosts[index].info
        domains, _ = clones(info.libvirt_uri, info.template)
        assert domains == set(spread[host]), f"{host}'s libvirt holds {domains}, its events say {spread[host]}"
        assert all(a.startswith(f"{info.subnet}.") for a in spread[host].values()), f"{host}: {spread[host]}"
    run = scenario.run = LoadRun(pair.wrap(0, []), stack2.balancer_url, stack2.workdir / "load")
    await wait_until(lambda: all(run.seen(a) for a in ready.values()), 120, 0.5, "answers from all 3 clones")
    assert run.progress()["failed"] == 0, run.progress()
    TIMINGS.append("two hosts: scale 1 -> 3 placed " + ", ".join(f"{h}: {len(v)}" for h, v in spread.items()))


@in_module_loop
async def test_losing_a_host_under_load_replaces_its_vms_on_the_other_without_failed_requests(
    watch2: FleetWatch, pair: TwoHostLab, stack2: TwoHostStack, scenario: Scenario
) -> None:
    """lab-b cut off (wire down, provisioner killed, libvirtd stopped): the balancer drops its VM at once, the scaler
    writes it off after host_lost_after_s and replaces it on lab-a, back to 3 ready; no GET fails."""
    run, lost, kept = scenario.run, ready_on(watch2, HOSTS[1]), ready_on(watch2, HOSTS[0])
    if run is None or not lost:
        pytest.skip("needs the fleet spread over both hosts under load (the previous test)")
    scenario.lost = lost
    cut_at = time.time()
    pair.cut()
    stack2.kill_second_provisioner()
    pair.hosts[1].stop_libvirtd()
    dropped = await wait_until(lambda: _balancer_dropped(stack2, set(lost), cut_at), 60, 0.2,
                               f"the balancer taking {', '.join(lost)} out of rotation")
    written_off = await wait_until(lambda: _decided(watch2, f"host {HOSTS[1]} silent", cut_at), 120, 0.5,
                                   f"{HOSTS[1]} written off")
    on_a = await wait_until(lambda: _ready_count(watch2, HOSTS[0], 3), 300, 0.5, f"3 ready VMs on {HOSTS[0]}")
    new = set(on_a) - set(kept)
    assert len(new) == len(lost), f"expected {len(lost)} replacement(s) on {HOSTS[0]}: {on_a}, before {kept}"
    await wait_until(lambda: all(run.seen(on_a[vm]) for vm in new), 120, 0.2, "answers from the replacement")
    serving = time.time()
    counts = run.progress()
    assert counts["failed"] == 0, f"failed GETs after losing {HOSTS[1]}: {counts['failures']}"
    retried = _retried(stack2, cut_at - 1)
    late = [r for r in retried if _wall(r, "time") > dropped + 0.5]
    assert not late, f"requests started after {', '.join(lost)} was taken out still went there first: {late}"
    slowest = max((float(r["duration_s"]) for r in retried), default=0.0)
    created = min(watch2.first(vm, VmState.REQUESTED, cut_at) or serving for vm in new)
    ready_at = max(watch2.first(vm, VmState.READY, cut_at) or serving for vm in new)
    TIMINGS.append(
        f"two hosts, {HOSTS[1]} lost: cut -> out of the balancer {dropped - cut_at:.1f} s, written off"
        f" {written_off - cut_at:.1f} s (host_lost_after_s {HOST_LOST_AFTER_S:g} after its last list answer, lists"
        f" every 5 s), replacement created {created - cut_at:.1f} s, ready {ready_at - cut_at:.1f} s, serving"
        f" {serving - cut_at:.1f} s; {counts['ok']} GETs so far, {counts['failed']} failed; {len(retried)} sent to"
        f" {HOSTS[1]} between the cut and its ejection were retried on another VM (slowest {slowest:.1f} s), none after"
    )


@in_module_loop
async def test_a_returning_host_is_reconciled_to_three_ready_vms_and_leaves_no_orphan(
    watch2: FleetWatch, pair: TwoHostLab, stack2: TwoHostStack, scenario: Scenario
) -> None:
    """lab-b back (wire up, libvirtd and provisioner started): its stale VM is adopted and counts again, and is the
    surplus drained and destroyed; the fleet settles at 3 ready, neither libvirt keeps an orphan domain or disk, no
    GET fails."""
    run, lost = scenario.run, scenario.lost
    if run is None or not lost:
        pytest.skip("needs the host the previous test cut off")
    before = set(watch2.ready())
    back_at = time.time()
    pair.mend()
    pair.hosts[1].start_libvirtd()
    stack2.start_second_provisioner()
    await hosts_answer(watch2.bus)
    counted_again = await wait_until(lambda: _first_event(watch2, VmState.DRAINING, back_at), 180, 0.5,
                                     "a surplus VM draining")
    ready = await watch2.settle(3)
    settled = time.time()
    gone = sorted(vm for vm in before | set(lost) if watch2.ended(vm))
    assert len(gone) == len(lost), f"expected {len(lost)} VM(s) drained away, gone: {gone}; fleet {_spread(watch2)}"
    assert set(gone) == set(lost), f"the written-off VM(s) {sorted(lost)} are the surplus, yet {gone} went"
    undrained = [vm for vm in gone if watch2.first(vm, VmState.DRAINING, back_at) is None]
    assert not undrained, f"destroyed without a drain while ready: {undrained}"
    await wait_until(lambda: not _orphans(pair, watch2), 60, 0.5, "no orphan domain or disk on either host")
    served = run.progress()["ok"]
    await wait_until(lambda: run.progress()["ok"] >= served + 20, 120, 0.5, "load after the return")
    result = run.stop()
    assert result["failed"] == 0, f"failed GETs: {result['failures']}"
    which = ", ".join(f"{vm} ({'stale, ' + HOSTS[1] if vm in lost else HOSTS[0]})" for vm in gone)
    kept = {host: len(vms) for host, vms in _spread(watch2).items()}
    assert sum(kept.values()) == len(ready) == 3
    TIMINGS.append(f"two hosts, {HOSTS[1]} back: surplus drain decided {counted_again - back_at:.1f} s after the wire"
                   f" came up, settled at 3 ready {settled - back_at:.1f} s; drained {which}; now {kept};"
                   f" {result['ok']} GETs in all, {result['failed']} failed")
