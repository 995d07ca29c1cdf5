"""The whole system on real VMs: NATS and the four services inside the lab's namespace, clones
booted by the provisioner through the lab's libvirt, HTTP/3 through the balancer.

The tests share one stack and run in file order; each first brings the fleet to the size it
needs, so a failed test leaves the next one a fair start. At most 3 VMs at any time.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

import libvirt
import pytest

from ops.lab import Lab
from shared.contract.events import VmState
from tests.e2e import vms
from tests.e2e.chaos import invariants as inv
from tests.e2e.fleetwatch import FleetWatch
from tests.e2e.load import LoadRun
from tests.e2e.stack import Stack
from tests.support import wait_until
from tests.support.chaos import Row, record


async def test_scale_to_two_boots_two_clones_that_answer_through_the_balancer(
    watch: FleetWatch, load: Any, lab_handle: Lab
) -> None:
    """Scaling to 2 gives two ready clones at their DHCP lease addresses, and GETs through the balancer reach both."""
    await watch.scale(2)
    ready = await watch.settle(2)
    assert len(set(ready.values())) == 2
    conn = libvirt.open(lab_handle.info.libvirt_uri)
    try:
        leased = {vm: f"{vms.lease_address(conn.lookupByName(vm), timeout_s=30)}:443" for vm in ready}
    finally:
        conn.close()
    assert leased == ready
    run = load()
    await wait_until(lambda: all(run.seen(a) for a in ready.values()), 120, 0.5, "answers from both clones")
    result = run.stop()
    assert result["failed"] == 0, result


async def test_scale_two_to_three_to_one_under_load_fails_no_request(watch: FleetWatch, load: Any) -> None:
    """Under steady HTTP/3 load the fleet grows 2 -> 3 and shrinks to 1 (drain first) with zero failed requests."""
    await watch.scale(2)
    before = await watch.settle(2)
    run = load()
    await wait_until(lambda: run.progress()["ok"] >= 20, 120, 0.5, "load flowing")
    await watch.scale(3)
    grown = await watch.settle(3)
    (new_address,) = set(grown.values()) - set(before.values())
    await wait_until(lambda: run.seen(new_address), 120, 0.5, "answers from the third clone")
    await watch.scale(1)
    (survivor,) = (await watch.settle(1)).values()
    served = run.progress()["ok"]
    await wait_until(lambda: run.progress()["ok"] >= served + 20, 120, 0.5, "load after the shrink")
    result = run.stop()
    assert result["failed"] == 0, result
    assert result["bodies"].get(f"Server Address: {survivor}", 0) > 0


async def _two_serving(watch: FleetWatch, load: Any) -> tuple[dict[str, str], LoadRun]:
    """Two ready clones, and steady load through the balancer that has had answers from both."""
    await watch.scale(2)
    before = await watch.settle(2)
    run = load()
    await wait_until(lambda: all(run.seen(a) for a in before.values()), 120, 0.5, "answers from both clones")
    return before, run


@pytest.mark.chaos
async def test_vm_destroyed_behind_our_back_is_replaced_without_failed_requests(
    watch: FleetWatch, load: Any, lab_handle: Lab, stack: Stack
) -> None:
    """A clone killed with `virsh destroy` is ejected and replaced while idempotent GETs keep succeeding."""
    health, since = inv.Health(stack), len(watch.history)
    before, run = await _two_serving(watch, load)
    victim = sorted(before)[0]
    fault_at = time.monotonic()
    subprocess.run(["virsh", "-c", lab_handle.info.libvirt_uri, "destroy", victim], check=True, capture_output=True)
    await wait_until(lambda: watch.ended(victim), 120, 0.5, f"{victim} reported gone")
    after = await watch.settle(2)
    assert victim not in after
    new = set(after.values()) - set(before.values())
    assert len(new) == 1, f"expected one new clone: {after}"
    (replacement,) = new
    assert replacement is not None, f"no new clone: {after}"
    await wait_until(lambda: run.seen(replacement), 120, 0.5, "answers from the replacement")
    serving = time.monotonic() - fault_at
    result = run.stop()
    found = await inv.check_all(watch, lab_handle.info.libvirt_uri, lab_handle.info.template, result, health, since)
    record(Row("F6", "VM killed (virsh destroy)", load="sequential GETs, 2 VMs", faults=1,
               invariants=inv.verdicts(found),
               figures=f"{result['ok']} GETs ok, 0 failed; replacement serving {serving:.1f} s after the kill"))
    assert result["failed"] == 0, result
    assert not any(found.values()), found


async def test_libvirtd_restart_under_load_fails_no_request_and_the_next_scale_out_works(
    watch: FleetWatch, load: Any, lab_handle: Lab
) -> None:
    """Restarting libvirtd leaves the serving clones alone, and the provisioner reconnects to boot the next one."""
    before, run = await _two_serving(watch, load)
    lab_handle.restart_libvirtd()
    await watch.scale(3)
    after = await watch.settle(3)
    assert set(before.items()) <= set(after.items()), f"a clone was replaced: {before} -> {after}"
    (added,) = set(after) - set(before)
    await wait_until(lambda: run.seen(after[added]), 120, 0.5, "answers from the clone booted after the restart")
    result = run.stop()
    assert result["failed"] == 0, result


async def test_scale_to_zero_leaves_only_the_template(watch: FleetWatch, lab_handle: Lab) -> None:
    """Scaling to 0 destroys every clone: libvirt keeps only the template's domain and volume."""
    await watch.scale(0)
    await watch.settle(0)
    domains, volumes = vms.domains_and_volumes(lab_handle.info.libvirt_uri)
    assert domains == {lab_handle.info.template}
    assert volumes == {f"{lab_handle.info.template}.qcow2"}
    assert all(event.state != VmState.READY for event in watch.latest.values())
