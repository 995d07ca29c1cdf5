"""Template rollout on real VMs: a fleet of 3 moves to a new version under HTTP/3 load, and a broken one rolls back.

Versions are the lab template's disk changed with debugfs (tests/e2e/variants.py): v1 and v2 differ only in
`/etc/quicfleet-version`; `v2-broken`'s init never starts the web server, so its clones boot, lease an
address and never pass readiness. The lab's one host holds at most 3 VMs, so a rollout of a 3-VM fleet
runs drain-first (`min_healthy_share` 0.66: one VM at a time may leave before its successor is ready;
the surge VM is refused while the host is full). The provisioner gives up on a VM's readiness after
`BROKEN_BOOT_TIMEOUT_S` here (a module stack of its own), which bounds how long the broken canary takes.
The tests run in file order on one stack; each first brings the fleet to 3 VMs on v1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ops.lab import Lab
from shared.bus import Bus
from shared.contract.base import ErrorCode
from shared.contract.events import VmState
from shared.contract.provisioning import ListVms, VmList
from shared.contract.rollout import RolloutPhase, RolloutState
from shared.contract.templates import RetireTemplate, TemplateList, TemplateVersionRetired
from shared.errors import BusError
from tests.e2e import variants, vms
from tests.e2e.conftest import TIMINGS
from tests.e2e.fleetwatch import BOOT_TIMEOUT_S, FleetWatch
from tests.e2e.stack import Stack, running_in
from tests.support import wait_until

HOST = "lab"
FLEET = 3
BROKEN_BOOT_TIMEOUT_S = 120
"""A clone boots to serving in 10-40 s under TCG here, three at a time; the broken one never does."""
ROLLOUT_TIMEOUT_S = 900.0
FAST = {"max_surge": 1, "min_healthy_share": 0.66, "canary": 0, "bake_s": 0.0}
"""Settings that only move the fleet (setting up v1): no canary, no bake."""
RETIRE_EVERY_S = 3.0
CAREFUL = {"max_surge": 1, "min_healthy_share": 0.66, "canary": 1, "bake_s": 20.0, "min_requests": 20}
"""The rollout under test: a canary baked beside the old version before the rest."""


class RolloutStack(Stack):
    """The e2e stack with a readiness deadline the broken version reaches in minutes, not the default 4."""

    def env(self) -> dict[str, str]:
        return super().env() | {"QUICFLEET_BOOT_TIMEOUT_S": str(BROKEN_BOOT_TIMEOUT_S)}


@pytest.fixture(scope="module")
def stack(lab_handle: Lab, e2e_workdir: Path) -> Iterator[Stack]:
    """This module's own stack (see `RolloutStack`); the conftest fixtures (`watch`, `load`) use it."""
    with running_in(lab_handle, RolloutStack(lab_handle, e2e_workdir / "stack-rollout")) as running:
        yield running


@pytest.fixture(scope="module")
def disks(lab_handle: Lab, e2e_workdir: Path) -> dict[str, Path]:
    """v1, v2 and v2-broken as disk files (made once: a push of the same bytes finds the version already there)."""
    source = variants.template_disk(lab_handle.info.libvirt_uri, lab_handle.info.template)
    where = e2e_workdir / "versions"
    return {label: variants.variant(source, where, label, broken=label.endswith("broken"))
            for label in ("v1", "v2", "v2-broken")}


async def vm_versions(bus: Bus) -> dict[str, tuple[VmState, str | None]]:
    """Every VM the provisioners list: its state and the version it was cloned from."""
    lists = await bus.gather(bus.subjects.prov_list, ListVms(), VmList, window=1.0)
    return {r.vm: (r.state, r.version) for listing in lists for r in listing.vms}


async def on(bus: Bus, version: str) -> bool:
    """Exactly the fleet's VMs are listed, all ready and all cloned from `version`."""
    listed = await vm_versions(bus)
    return len(listed) == FLEET and all(state is VmState.READY and v == version for state, v in listed.values())


async def protection(bus: Bus, version: str) -> str | None:
    """Why the host keeps `version` from being retired (None: it does not, or it has no such version)."""
    found = (await variants.host_versions(bus)).get(version)
    return found.protected if found else None


async def run_rollout(bus: Bus, version: str, settings: dict[str, Any]) -> RolloutState:
    """Start a rollout to `version` and wait until it is over (done or rolled back)."""
    await variants.start_rollout(bus, version, **settings)
    state = await wait_until(lambda: variants.finished(bus, version), ROLLOUT_TIMEOUT_S, 1.0, f"rollout to {version}")
    assert isinstance(state, RolloutState)
    return state


async def fleet_on_v1(watch: FleetWatch, disks: dict[str, Path]) -> None:
    """v1 pushed and 3 ready VMs cloned from it (rolled out from whatever the fleet runs, when needed)."""
    bus = watch.bus
    await variants.push(bus, HOST, disks["v1"], "v1")
    await watch.scale(FLEET)
    await watch.settle(FLEET)
    if not await on(bus, "v1"):
        state = await run_rollout(bus, "v1", FAST)
        assert state.phase is RolloutPhase.DONE, state
    await watch.settle(FLEET)
    assert await on(bus, "v1"), await vm_versions(bus)


async def test_a_broken_version_is_rolled_back_on_its_own_and_the_old_one_kept(
    watch: FleetWatch, load: Any, disks: dict[str, Path], lab_handle: Lab
) -> None:
    """v1 -> v2-broken under load: its canary never gets ready, the rollout returns to v1, 0 GETs fail, v1 stays."""
    bus = watch.bus
    await fleet_on_v1(watch, disks)
    broken = await variants.push(bus, HOST, disks["v2-broken"], "v2-broken")
    v1 = (await variants.host_versions(bus))["v1"]
    phases = await variants.RolloutLog().start(bus)
    run = load()
    await wait_until(lambda: run.progress()["ok"] >= 20, 120, 0.5, "load flowing")
    started = time.time()
    await variants.start_rollout(bus, "v2-broken", **CAREFUL)
    with pytest.raises(BusError) as refused:  # VMs on v1 hold its base: the backing-chain rule refuses
        await bus.request(bus.subjects.prov_template_retire(HOST), RetireTemplate(version="v1"), TemplateList,
                          timeout=60)
    assert refused.value.code is ErrorCode.CONFLICT, refused.value
    why = await wait_until(lambda: protection(bus, "v1"), 60, 1.0, "v1 protected while the rollout may roll back to it")
    state = await wait_until(lambda: variants.finished(bus, "v2-broken"), ROLLOUT_TIMEOUT_S, 1.0, "the rollback")
    rolled_back = time.time()
    await watch.settle(FLEET)
    result = run.stop()
    assert state.phase is RolloutPhase.ROLLED_BACK, state
    assert state.reason and "v2-broken" in state.reason, state.reason
    assert await on(bus, "v1"), await vm_versions(bus)
    assert result["failed"] == 0, result
    kept = (await variants.host_versions(bus))["v1"]
    assert kept.ready and kept.digest == v1.digest and kept.base == v1.base
    _, volumes = vms.domains_and_volumes(lab_handle.info.libvirt_uri)
    assert v1.base and Path(v1.base).name in volumes
    assert broken.version == "v2-broken" and "v2-broken" in why
    TIMINGS.append(f"rollout: broken version (web server never starts; readiness deadline {BROKEN_BOOT_TIMEOUT_S} s)"
                   f" rolled back {rolled_back - started:.0f} s after the start; {result['ok']} GETs served"
                   f" meanwhile, 0 failed")
    past_canary = [e for p in (RolloutPhase.BAKING, RolloutPhase.ROLLING) for e in phases.entered("v2-broken", p)]
    assert not past_canary, f"the broken canary never became ready, yet the rollout went on: {past_canary[0]}"


async def retire_when_free(bus: Bus, version: str, attempts: list[tuple[float, str]]) -> float:
    """Ask the host to retire `version` every few seconds, as an operator would, until it does; when it did.

    Each refusal must be `conflict` (a VM's backing chain holds the base, or the rollout protects it).
    """
    while True:
        try:
            await bus.request(bus.subjects.prov_template_retire(HOST), RetireTemplate(version=version), TemplateList,
                              timeout=60)
        except BusError as error:
            assert error.code is ErrorCode.CONFLICT, error
            attempts.append((time.time(), error.message))
            await asyncio.sleep(RETIRE_EVERY_S)
            continue
        attempts.append((time.time(), "retired"))
        return time.time()


async def test_v1_to_v2_under_load_replaces_every_vm_and_deletes_v1_after_its_last_overlay(
    watch: FleetWatch, load: Any, disks: dict[str, Path], lab_handle: Lab
) -> None:
    """v1 -> v2 (canary, bake, rest) under load: 0 GETs fail, all 3 VMs end on v2, v1's base goes after its last VM.

    A retire of v1 is asked all along: refused while a VM stands on it or the rollout may roll back to it.
    """
    bus = watch.bus
    await fleet_on_v1(watch, disks)
    v1 = (await variants.host_versions(bus))["v1"]
    await variants.push(bus, HOST, disks["v2"], "v2")
    retired: list[tuple[float, TemplateVersionRetired]] = []

    async def on_retired(event: TemplateVersionRetired, _msg: Any) -> None:
        retired.append((time.time(), event))

    await bus.subscribe(bus.subjects.template_retired, TemplateVersionRetired, on_retired)
    before = await vm_versions(bus)
    phases = await variants.RolloutLog().start(bus)
    run = load()
    await wait_until(lambda: run.progress()["ok"] >= 20, 120, 0.5, "load flowing")
    started = time.time()
    attempts: list[tuple[float, str]] = []
    retiring = asyncio.create_task(retire_when_free(bus, "v1", attempts))
    try:
        await variants.start_rollout(bus, "v2", **CAREFUL)
        try:  # asserted at the end, so that a missing protection does not hide the rest
            why: str | None = await wait_until(lambda: protection(bus, "v1"), 60, 1.0, "v1 protected")
        except AssertionError:
            why = None
        state = await wait_until(lambda: variants.finished(bus, "v2"), ROLLOUT_TIMEOUT_S, 1.0, "the rollout to v2")
        done = time.time()
        retired_at = await asyncio.wait_for(asyncio.shield(retiring), 120)
    finally:
        retiring.cancel()
    after = await watch.settle(FLEET, timeout=BOOT_TIMEOUT_S)
    await wait_until(lambda: all(run.seen(address) for address in after.values()), 120, 0.5, "answers from all of v2")
    result = run.stop()
    assert state.phase is RolloutPhase.DONE, state
    assert await on(bus, "v2"), await vm_versions(bus)
    assert not set(before) & set(after), f"a v1 VM is still serving: {before} -> {after}"
    assert result["failed"] == 0, result
    last_v1_gone = max(watch.first(vm, VmState.DESTROYED, started) or done for vm in before)
    assert retired_at >= last_v1_gone, f"v1's base was deleted before its last overlay: {attempts}"
    assert len(attempts) > 1, "no retire was refused while v1's VMs stood on it"
    await wait_until(lambda: any(e.version == "v1" for _, e in retired), 30, 0.5, "fleet.template.retired for v1")
    gone = next(e for _, e in retired if e.version == "v1")
    over = phases.entered("v2", RolloutPhase.DONE)
    assert over and gone.at >= over[0].at, f"v1 retired while the rollout could still roll back to it: {attempts}"
    assert "v1" not in await variants.host_versions(bus)
    _, volumes = vms.domains_and_volumes(lab_handle.info.libvirt_uri)
    assert v1.base and Path(v1.base).name not in volumes
    TIMINGS.append(f"rollout: 3-VM fleet v1 -> v2 (canary 1, bake {CAREFUL['bake_s']:g} s, drain-first) replaced in"
                   f" {done - started:.0f} s; {result['ok']} GETs served during it, 0 failed; v1's base deleted"
                   f" {retired_at - last_v1_gone:.1f} s after its last VM ({len(attempts) - 1} retires refused before)")
    baking = phases.entered("v2", RolloutPhase.BAKING)
    protected_ok = bool(why and "v2" in why)
    baked_ready = bool(baking and variants.ready_on(baking[0], "v2") >= 1)
    assert protected_ok, f"v1 was not protected during the second rollout from it: {why}"
    assert baked_ready, f"the canary baked before a v2 VM was ready: {baking[:1]}"
