"""The warm pool on real VMs: a scale-out resumes a pooled clone instead of booting one, under load.

With `pool_size` 1 the fleet keeps one clone booted, checked and paused beside the serving ones;
scaling 1 -> 2 takes it (resume, check again, ready), the pool refills in the background, and a
scale to 0 with the pool turned off leaves only the template in libvirt.
"""

from __future__ import annotations

import time
from typing import Any

from ops.lab import Lab
from shared.contract.events import VmState
from shared.contract.policy import PolicyPatch, ScalingPolicy
from tests.e2e import vms
from tests.e2e.conftest import TIMINGS
from tests.e2e.fleetwatch import BOOT_TIMEOUT_S, FleetWatch
from tests.support import wait_until

SERVING_BOUND_S = 15.0
"""Scale command to the pooled VM answering through the balancer. Measured: resume to first answer
0.1-0.2 s, a fresh clone's boot 14-19 s; the bound leaves room for an evaluation, the take, the
provisioner's readiness check and the balancer's identity check, and is still below a boot."""


def _in(watch: FleetWatch, state: VmState) -> dict[str, str | None]:
    return {vm: e.address for vm, e in watch.latest.items() if e.state is state}


async def _policy(watch: FleetWatch, **fields: Any) -> None:
    await watch.bus.request(watch.bus.subjects.cmd_policy, PolicyPatch(**fields), ScalingPolicy, timeout=30)


async def _pool_of_one_beside(watch: FleetWatch, ready: int) -> tuple[dict[str, str], str]:
    """`ready` serving VMs and one pooled one, nothing else on its way; returns them."""

    def settled() -> tuple[dict[str, str], str] | None:
        serving, pooled = watch.ready(), _in(watch, VmState.POOLED)
        others = [e for e in watch.latest.values() if e.state in
                  {VmState.REQUESTED, VmState.CLONING, VmState.BOOTING, VmState.DRAINING}]
        if len(serving) == ready and len(pooled) == 1 and not others:
            return serving, next(iter(pooled))
        return None

    serving, pooled = await wait_until(settled, BOOT_TIMEOUT_S, 0.5, f"{ready} ready VM(s) and one pooled")
    return dict(serving), str(pooled)


async def test_a_scale_out_resumes_the_pooled_vm_and_the_pool_refills(watch: FleetWatch, load: Any) -> None:
    """Scale 1 -> 2 with a pool of 1: the pooled clone serves well before a boot could, 0 GETs fail, it refills."""
    await _policy(watch, pool_size=1)
    await watch.scale(1)
    serving, pooled = await _pool_of_one_beside(watch, 1)
    run = load()
    await wait_until(lambda: all(run.seen(a) for a in serving.values()), 120, 0.5, "answers from the serving VM")
    asked = time.time()
    await watch.scale(2)
    await wait_until(lambda: pooled in watch.ready(), 60, 0.1, f"{pooled} taken from the pool and ready")
    ready_at = time.time()
    address = watch.ready()[pooled]
    await wait_until(lambda: run.seen(address), 60, 0.1, f"answers from {pooled}")
    answered = time.time()
    grown, refill = await _pool_of_one_beside(watch, 2)
    refilled = time.time()
    result = run.stop()
    assert result["failed"] == 0, result
    assert set(grown) == set(serving) | {pooled}, f"the scale-out was not the pooled VM: {grown}"
    assert refill != pooled
    assert answered - asked < SERVING_BOUND_S, f"the pooled VM took {answered - asked:.1f} s to serve"
    TIMINGS.append(f"warm pool: scale 1 -> 2 served from the pool: ready {ready_at - asked:.1f} s, answering"
                   f" through the balancer {answered - asked:.1f} s after the command; pool refilled after"
                   f" {refilled - asked:.1f} s")


async def test_the_pool_goes_only_when_asked_and_nothing_is_left(watch: FleetWatch, lab_handle: Lab) -> None:
    """A scale to 0 keeps the pooled VM; pool_size 0 removes it, and libvirt keeps only the template."""
    await watch.scale(0)
    await wait_until(lambda: not watch.ready() and len(_in(watch, VmState.POOLED)) == 1, BOOT_TIMEOUT_S, 0.5,
                     "no serving VM, the pool kept")
    await _policy(watch, pool_size=0)
    await watch.settle(0)
    domains, volumes = vms.domains_and_volumes(lab_handle.info.libvirt_uri)
    assert domains == {lab_handle.info.template}
    assert volumes == {f"{lab_handle.info.template}.qcow2"}
