"""Liveness and identity on real VMs: a guest whose web server died, a hung (paused) guest, and an
address that answers as another VM, each under steady HTTP/3 load through the balancer.

The policy replaces a VM the balancers agree is unhealthy after 5 s (no rate limit between two
tests' replacements), so each case measures detection, decision and boot; the figures are printed
at the end of the run ("end-to-end figures").
"""

from __future__ import annotations

import subprocess
import time
from datetime import datetime
from typing import Any

import pytest

from ops.lab import Lab
from shared.bus import Bus
from shared.contract.events import VmState, VmStateChanged
from shared.contract.policy import PolicyPatch, ScalingPolicy
from tests.e2e import vms
from tests.e2e.chaos import invariants as inv
from tests.e2e.conftest import TIMINGS
from tests.e2e.fleetwatch import FleetWatch
from tests.e2e.load import LoadRun
from tests.e2e.stack import Stack, log_lines
from tests.support import wait_until
from tests.support.chaos import Row, record

REPLACE_AFTER_S = 5.0


async def _two_serving(
    watch: FleetWatch, load: Any, replace_after_s: float = REPLACE_AFTER_S
) -> tuple[dict[str, str], LoadRun]:
    """Liveness policy set, two ready clones, and steady load that has had answers from both."""
    patch = PolicyPatch(unhealthy_replace_after_s=replace_after_s, unhealthy_replace_interval_s=0)
    await watch.bus.request(watch.bus.subjects.cmd_policy, patch, ScalingPolicy, timeout=30)
    await watch.scale(2)
    before = await watch.settle(2)
    run = load()
    await wait_until(lambda: all(run.seen(a) for a in before.values()), 120, 0.5, "answers from both clones")
    return before, run


def _wall(record: dict[str, Any], key: str = "timestamp") -> float:
    return datetime.fromisoformat(str(record[key])).timestamp()


async def _replaced(watch: FleetWatch, run: LoadRun, stack: Stack, victim: str, before: dict[str, str],
                    fault_at: float, case: str, lab: Lab, health: inv.Health, since: int) -> None:
    """The victim is replaced, the fleet is back at 2 and the replacement serves; its timings are kept,
    and the invariants go into the reliability matrix's F6 row."""
    await wait_until(lambda: watch.ended(victim), 180, 0.5, f"{victim} replaced and destroyed")
    after = await watch.settle(2)
    assert victim not in after
    (replacement,) = set(after) - set(before)
    await wait_until(lambda: run.seen(after[replacement]), 120, 0.2, "answers from the replacement")
    serving = time.time()
    result = run.stop()
    found = await inv.check_all(watch, lab.info.libvirt_uri, lab.info.template, result, health, since)
    record(Row("F6", case, load="sequential GETs, 2 VMs", faults=1, invariants=inv.verdicts(found),
               figures=f"{result['ok']} GETs ok, 0 failed; replaced and serving {time.time() - fault_at:.1f} s "
                       f"after the fault; {health.growth()}"))
    assert result["failed"] == 0, result
    assert not any(found.values()), found
    unhealthy = [r for r in log_lines(stack, "balancer", "backend.unhealthy") if r.get("backend") == victim]
    detected = min(_wall(r) for r in unhealthy) if unhealthy else None
    decided = next((at for at, d in watch.decisions if at >= fault_at and f"replacing {victim}" in d.reason), None)
    requested = watch.first(replacement, VmState.REQUESTED, fault_at)
    ready = watch.first(replacement, VmState.READY, fault_at)
    TIMINGS.append(_timing_line(case, fault_at, detected, decided, requested, ready, serving))


def _timing_line(case: str, fault: float, detected: float | None, decided: float | None,
                 requested: float | None, ready: float | None, serving: float) -> str:
    def at(moment: float | None) -> str:
        return "?" if moment is None else f"{moment - fault:.1f} s"

    boot = "?" if requested is None or ready is None else f"{ready - requested:.1f} s"
    return (f"liveness {case}: fault -> unhealthy on the balancer {at(detected)}, replace decided {at(decided)},"
            f" replacement created {at(requested)}, ready {at(ready)} (boot {boot}), serving {at(serving)}")


@pytest.mark.chaos
async def test_a_guest_whose_web_server_died_is_replaced_without_failed_requests(
    watch: FleetWatch, load: Any, lab_handle: Lab, stack: Stack
) -> None:
    """Caddy killed (and kept down) inside a guest: ejected, replaced, back to 2 VMs, 0 failed GETs."""
    health, since = inv.Health(stack), len(watch.history)
    before, run = await _two_serving(watch, load)
    victim = sorted(before)[0]
    fault_at = time.time()
    vms.guest_exec(lab_handle.info.libvirt_uri, victim, "touch /run/web.down; /bin/busybox killall caddy")
    await _replaced(watch, run, stack, victim, before, fault_at, "web server killed", lab_handle, health, since)


@pytest.mark.chaos
async def test_a_hung_guest_is_replaced_without_failed_requests(
    watch: FleetWatch, load: Any, lab_handle: Lab, stack: Stack
) -> None:
    """`virsh suspend` (a guest that no longer runs): ejected, replaced, back to 2 VMs, 0 failed GETs."""
    health, since = inv.Health(stack), len(watch.history)
    before, run = await _two_serving(watch, load)
    victim = sorted(before)[0]
    fault_at = time.time()
    command = ["virsh", "-c", lab_handle.info.libvirt_uri, "suspend", victim]
    subprocess.run(command, check=True, capture_output=True, timeout=30)
    await _replaced(watch, run, stack, victim, before, fault_at, "guest hung (virsh suspend)", lab_handle, health,
                    since)


async def _forge(bus: Bus, vm: str, address: str, uuid: str) -> float:
    """Announce `vm` ready at `address` (another VM's): the provisioner's view swapped, as a recycled lease would."""
    event = VmStateChanged(vm=vm, state=VmState.READY, address=address, host="lab", uuid=uuid, identity=True)
    await bus.publish(bus.subjects.vm(VmState.READY), event)
    return time.time()


async def test_an_address_that_answers_as_another_vm_is_ejected_and_never_routed_to(
    watch: FleetWatch, load: Any, lab_handle: Lab, stack: Stack
) -> None:
    """VM A announced at B's address: the balancer sees B's UUID there, ejects A with the identity reason and
    routes nothing to it until the provisioner's next republish puts A back at its own address (no
    replacement here: the swap lasts at most one reconcile period, shorter than the policy's wait)."""
    before, run = await _two_serving(watch, load, replace_after_s=300)
    honest, swapped = sorted(before)
    expected = vms.domain_uuid(lab_handle.info.libvirt_uri, swapped)
    forged_at = await _forge(watch.bus, swapped, before[honest], expected)

    def mismatch() -> list[dict[str, Any]]:
        lines = log_lines(stack, "balancer", "backend.identity_mismatch")
        return [r for r in lines if r.get("vm", r.get("backend")) == swapped and _wall(r) >= forged_at - 1]

    (first, *_) = await wait_until(mismatch, 30, 0.2, f"{swapped} ejected for answering as another VM")
    assert first.get("expected") == expected

    def republished() -> float | None:
        return next((at for at, e in watch.arrived if at >= forged_at and e.vm == swapped
                     and e.state is VmState.READY and e.address == before[swapped]), None)

    restored = await wait_until(republished, 60, 0.2, f"the provisioner republishing {swapped} at its own address")
    await wait_until(lambda: run.progress()["ok"] >= 20, 60, 0.5, "load after the restore")
    result = run.stop()
    assert result["failed"] == 0, result
    routed = [r for r in log_lines(stack, "balancer", "access")
              if r.get("vm") == swapped and forged_at + 0.2 <= _wall(r, "time") < restored - 0.2]
    assert routed == [], f"{len(routed)} requests answered by {swapped} while it stood at {honest}'s address"
    TIMINGS.append(f"identity: address swap -> ejected {_wall(first) - forged_at:.2f} s; "
                   f"restored by the provisioner's republish after {restored - forged_at:.1f} s")
