"""The template rollout on a real nats-server: scaler replicas and a provisioner that clones versions."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from ops.natsserver import NatsServer
from services.scaler.bootstrap import bootstrap
from services.scaler.service import ScalerService
from services.scaler.settings import ScalerSettings
from shared.bus import Bus
from shared.contract.commands import GetStatus, ScaleFleet
from shared.contract.events import VmState
from shared.contract.load import FleetLoaded, VmLoad
from shared.contract.rollout import (
    GetRollout,
    PauseRollout,
    ResumeRollout,
    RolloutPhase,
    RolloutStatus,
    StartRollout,
)
from shared.contract.status import DesiredState, FleetStatus
from shared.contract.templates import HostTemplateVersion, ProtectTemplate, PushTemplate
from shared.endpoints import ok_reply
from tests.integration.scaler import conftest
from tests.integration.scaler.versioned import VersionedProvisioner
from tests.support import Collector, wait_until
from tests.support.h3server import H3Backend

TTL = 2.0
Phase = RolloutPhase


@asynccontextmanager
async def scaler(name: str) -> AsyncIterator[ScalerService]:
    async with bootstrap(ScalerSettings(scaler_id=name, lease_ttl_s=TTL)) as service:
        await wait_until(lambda: service._lease is not None and service.lease.holder is not None, 20, what="a leader")
        yield service


async def _rollout(bus: Bus) -> RolloutStatus:
    return await bus.request(bus.subjects.cmd_rollout_status, GetRollout(), RolloutStatus)


async def _phase(bus: Bus, phase: Phase) -> RolloutStatus | None:
    status = await _rollout(bus)
    return status if status.rollout is not None and status.rollout.phase is phase else None


async def _fleet(bus: Bus, prov: VersionedProvisioner, count: int, version: str | None) -> bool:
    """`count` ready VMs, all of `version`, nothing else left at the provisioner."""
    ready = [r for r in prov.vms.values() if r.state is VmState.READY]
    return len(prov.vms) == count and len(ready) == count and len(prov.on(version)) == count


async def _three_vms(bus: Bus, prov: VersionedProvisioner) -> None:
    await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=3), DesiredState)
    await wait_until(lambda: _fleet(bus, prov, 3, None), 20, what="three ready VMs of the template domain")


async def _cli(env: dict[str, str], *args: str) -> str:
    """Run `quicfleet <args>` against the test's nats-server; its output (it must exit 0)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ops.cli", "--nats-url", env["QUICFLEET_NATS_URL"], *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env={**os.environ, **env},
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, output.decode()
    return output.decode()


async def _events(bus: Bus) -> Collector:
    collector = Collector()

    async def on_message(msg: object) -> None:
        await collector(msg)

    await bus.nc.subscribe(bus.subjects.scaler_rollout, cb=on_message)
    return collector


async def test_a_rollout_replaces_the_fleet_in_batches_canary_first(bus: Bus, settings_env: dict[str, str]) -> None:
    """v2 replaces three VMs one at a time (surge 1, nothing drained early): canary, bake, rolling, done."""
    events = await _events(bus)
    async with VersionedProvisioner(bus) as prov, scaler("s1") as one:
        await wait_until(lambda: one.leading, 20, what="leadership")
        await _three_vms(bus, prov)
        start = StartRollout(version="v2", canary=1, bake_s=1, max_surge=1)
        reply = await bus.request(bus.subjects.cmd_rollout_start, start, RolloutStatus)
        assert reply.rollout is not None and reply.rollout.phase is Phase.CANARY and reply.rollout.old_version is None
        done = await wait_until(lambda: _phase(bus, Phase.DONE), 40, what="the rollout done")
        await wait_until(lambda: _fleet(bus, prov, 3, "v2"), 20, what="three ready VMs of v2")
    assert done.rollout is not None and done.rollout.replaced == 3
    assert [c.version for c in prov.creates] == [None, None, None, "v2", "v2", "v2"]
    changes = [json.loads(m.data) for m in events.messages]
    phases = [c["phase"] for c in changes]
    assert phases.index("canary") < phases.index("baking") < phases.index("rolling") < phases.index("done")
    assert max(len(c["batch"]) for c in changes) == 1


async def test_the_old_version_is_protected_on_each_host_while_the_rollout_may_roll_back(
    bus: Bus, settings_env: dict[str, str]
) -> None:
    """A rollout v1 -> v2 asks the host to protect v1 while it runs and to lift it once done."""
    asked: list[ProtectTemplate] = []

    async def on_protect(msg: Msg) -> None:
        command = ProtectTemplate.model_validate_json(msg.data)
        asked.append(command)
        when = datetime.now(UTC)
        await msg.respond(ok_reply(HostTemplateVersion(template="tpl", version=command.version, digest="0" * 64,
                                                       created_at=when, host="h1", ready=True)))

    await bus.nc.subscribe(bus.subjects.prov_template_protect("h1"), cb=on_protect)
    async with VersionedProvisioner(bus, max_vms=10) as prov, scaler("s1") as one:
        await wait_until(lambda: one.leading, 20, what="leadership")
        await _three_vms(bus, prov)
        for version in ("v1", "v2"):
            start = StartRollout(version=version, canary=0, max_surge=3)
            await bus.request(bus.subjects.cmd_rollout_start, start, RolloutStatus)
            await wait_until(lambda: _phase(bus, Phase.DONE), 30, what=f"the rollout to {version} done")
        await wait_until(lambda: len(asked) == 2, 20, what="protect, then lift")
    assert [(c.version, c.protected) for c in asked] == [("v1", True), ("v1", False)]
    assert "may roll back" in (asked[0].reason or "")


async def test_rollout_state_survives_a_leader_kill(bus: Bus, settings_env: dict[str, str]) -> None:
    """Paused at a 50% checkpoint, the leader dies; the follower leads on from the stored state after a resume."""
    async with VersionedProvisioner(bus) as prov, scaler("s1") as one, scaler("s2") as two:
        await wait_until(lambda: one.leading or two.leading, 20, what="a leader")
        leader, follower = (one, two) if one.leading else (two, one)
        await _three_vms(bus, prov)
        start = StartRollout(version="v2", canary=0, checkpoints=[50])
        await bus.request(bus.subjects.cmd_rollout_start, start, RolloutStatus)
        paused = await wait_until(lambda: _phase(bus, Phase.PAUSED), 30, what="the checkpoint")
        assert paused.rollout is not None and paused.rollout.checkpoints_passed == 1
        assert len(prov.on("v2")) == 2 and "checkpoint 50%" in (paused.rollout.reason or "")
        await leader.cancel_tasks()
        await leader.bus.nc.close()
        await wait_until(lambda: follower.leading, 10 * TTL, what="takeover")
        await bus.request(bus.subjects.cmd_rollout_resume, ResumeRollout(), RolloutStatus)
        await wait_until(lambda: _phase(bus, Phase.DONE), 30, what="the rollout done by the new leader")
        await wait_until(lambda: _fleet(bus, prov, 3, "v2"), 20, what="three ready VMs of v2")
    assert [c.epoch for c in prov.creates if c.version == "v2"][-1] == 2


async def test_autoscaling_during_a_rollout_creates_the_new_version_and_removes_the_old_first(
    bus: Bus, settings_env: dict[str, str]
) -> None:
    """Paused at 50% of 4 VMs: a scale to 5 creates a v2 VM; a scale to 3 drains the two old ones, which ends it."""
    async with VersionedProvisioner(bus) as prov, scaler("s1") as one:
        await wait_until(lambda: one.leading, 20, what="leadership")
        await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=4), DesiredState)
        await wait_until(lambda: _fleet(bus, prov, 4, None), 20, what="four ready VMs of the template domain")
        start = StartRollout(version="v2", canary=0, checkpoints=[50])
        await bus.request(bus.subjects.cmd_rollout_start, start, RolloutStatus)
        await wait_until(lambda: _phase(bus, Phase.PAUSED), 30, what="the checkpoint")
        await wait_until(lambda: len(prov.vms) == 4, 20, what="the replaced VMs destroyed")
        await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=5), DesiredState)
        await wait_until(lambda: len(prov.on("v2")) == 3 and len(prov.on(None)) == 2, 20, what="a fifth VM, of v2")
        await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=3), DesiredState)
        await wait_until(lambda: _phase(bus, Phase.DONE), 30, what="the rollout done by the scale-in")
        await wait_until(lambda: _fleet(bus, prov, 3, "v2"), 20, what="three ready VMs of v2")


async def test_pause_resume_and_abort(bus: Bus, settings_env: dict[str, str]) -> None:
    """A pause holds a baking canary, a resume bakes again, an abort rolls v2 back to the template domain."""
    async with VersionedProvisioner(bus) as prov, scaler("s1") as one:
        await wait_until(lambda: one.leading, 20, what="leadership")
        await _three_vms(bus, prov)
        start = StartRollout(version="v2", canary=1, bake_s=600)
        await bus.request(bus.subjects.cmd_rollout_start, start, RolloutStatus)
        await wait_until(lambda: _phase(bus, Phase.BAKING), 30, what="the canary baking")
        paused = await bus.request(bus.subjects.cmd_rollout_pause, PauseRollout(reason="look"), RolloutStatus)
        assert paused.rollout is not None and paused.rollout.paused_phase is Phase.BAKING
        assert paused.rollout.reason == "paused: look"
        resumed = await bus.request(bus.subjects.cmd_rollout_resume, ResumeRollout(), RolloutStatus)
        assert resumed.rollout is not None and resumed.rollout.phase is Phase.BAKING
        assert len(prov.on("v2")) == 1
        shown = await _cli(settings_env, "rollout", "status")
        assert "rollout the template domain -> v2: baking" in shown and "ready 1" in shown
        await _cli(settings_env, "rollout", "abort", "--reason", "enough")
        back = await wait_until(lambda: _phase(bus, Phase.ROLLED_BACK), 30, what="rolled back")
        await wait_until(lambda: _fleet(bus, prov, 3, None), 20, what="three ready VMs of the template domain")
    assert back.rollout is not None and "aborted (enough)" in (back.rollout.reason or "")


async def test_a_broken_version_is_rolled_back_on_its_own(bus: Bus, settings_env: dict[str, str]) -> None:
    """A v2 whose VMs fail readiness rolls back with no command; `fleet.cmd.status` carries the reason."""
    async with VersionedProvisioner(bus, broken=frozenset({"v2"})) as prov, scaler("s1") as one:
        await wait_until(lambda: one.leading, 20, what="leadership")
        await _three_vms(bus, prov)
        start = StartRollout(version="v2", canary=1, bake_s=1)
        await bus.request(bus.subjects.cmd_rollout_start, start, RolloutStatus)
        await wait_until(lambda: _phase(bus, Phase.ROLLED_BACK), 30, what="rolled back")
        await wait_until(lambda: _fleet(bus, prov, 3, None), 20, what="three ready VMs of the template domain")
        status = await bus.request(bus.subjects.cmd_status, GetStatus(), FleetStatus)
    assert status.rollout is not None and "failed (readiness or identity)" in (status.rollout.reason or "")
    assert sum(c.version == "v2" for c in prov.creates) == 1  # the canary alone


async def test_a_version_answering_more_errors_than_the_old_one_is_rolled_back(
    bus: Bus, settings_env: dict[str, str]
) -> None:
    """While the canary bakes, the load snapshots show v2 at 20% errors beside 0% on the old VMs: rollback."""
    async with VersionedProvisioner(bus) as prov, scaler("s1") as one:
        await wait_until(lambda: one.leading, 20, what="leadership")
        await _three_vms(bus, prov)
        start = StartRollout(version="v2", canary=1, bake_s=600, min_requests=50)
        await bus.request(bus.subjects.cmd_rollout_start, start, RolloutStatus)
        await wait_until(lambda: _phase(bus, Phase.BAKING), 30, what="the canary baking")
        reports = iter(range(1, 1_000_000))

        async def snapshot_then_phase() -> RolloutStatus | None:
            loads = [VmLoad(vm=name, rps=100, error_rate=0.2 if prov.version_of(name) == "v2" else 0.0, p95_s=0.01)
                     for name in prov.vms]
            await bus.publish(bus.subjects.load, FleetLoaded(window_s=1, rps=300, vms=loads, reports=next(reports)))
            return await _phase(bus, Phase.ROLLED_BACK)

        back = await wait_until(snapshot_then_phase, 30, what="rolled back on the error share")
    assert back.rollout is not None and "v2 answers 20.0% errors against 0.0%" in (back.rollout.reason or "")
    assert len(prov.on(None)) == 3 and not prov.on("v2")


async def test_a_provisioner_restart_mid_rollout_does_not_lose_it(bus: Bus, settings_env: dict[str, str]) -> None:
    """The provisioner goes away at a checkpoint and comes back with the same VMs: the rollout goes on."""
    async with scaler("s1") as one:
        async with VersionedProvisioner(bus) as prov:
            await wait_until(lambda: one.leading, 20, what="leadership")
            await _three_vms(bus, prov)
            start = StartRollout(version="v2", canary=0, checkpoints=[50])
            await bus.request(bus.subjects.cmd_rollout_start, start, RolloutStatus)
            await wait_until(lambda: _phase(bus, Phase.PAUSED), 30, what="the checkpoint")
        await bus.request(bus.subjects.cmd_rollout_resume, ResumeRollout(), RolloutStatus)
        async with VersionedProvisioner(bus) as again:
            again.vms, again.by_request, again.by_version = prov.vms, prov.by_request, prov.by_version
            again.max_epoch = prov.max_epoch
            await wait_until(lambda: _phase(bus, Phase.DONE), 30, what="the rollout done")
            await wait_until(lambda: _fleet(bus, again, 3, "v2"), 20, what="three ready VMs of v2")


@pytest.mark.skipif(conftest.world is None, reason="the provisioner's libvirt test fixtures are not available")
async def test_a_rollout_with_the_real_provisioner_survives_its_restart(
    bus: Bus, nats_server: NatsServer, tmp_path: Path, settings_env: dict[str, str]
) -> None:
    """On libvirt's test driver: v2 pushed, the rollout pauses at 50%, the provisioner restarts, and after a
    resume every domain is an overlay cloned from v2 (its tag says so) and ready."""
    from services.provisioner.bootstrap import bootstrap as provisioner_bootstrap
    from services.provisioner.core.tags import NAMESPACE, parse_tag
    from tests.integration.scaler.versions_pool import sources

    async with AsyncExitStack() as stack:
        src = stack.enter_context(sources(tmp_path))
        world = src.world
        backends = [await stack.enter_async_context(H3Backend(tmp_path)) for _ in range(4)]
        settings = world.settings(nats_server, static_addresses=",".join(b.address for b in backends))
        one = await stack.enter_async_context(scaler("s1"))

        def tags() -> list[str]:
            found = [parse_tag(dom.metadata(2, NAMESPACE, 0)) for dom in world.ours()]
            return sorted(tag.version or "-" if tag else "?" for tag in found)

        async with provisioner_bootstrap(settings):
            await wait_until(lambda: one.leading, 20, what="leadership")
            push = PushTemplate(source=src.source_v2, version="v2")
            pushed = await bus.request(bus.subjects.prov_template_push(world.host), push, HostTemplateVersion, 10)
            assert pushed.ready
            await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=2), DesiredState)
            await wait_until(lambda: _ready_vms(bus, 2), 60, what="two ready VMs of the template domain")
            start = StartRollout(version="v2", canary=0, checkpoints=[50])
            await bus.request(bus.subjects.cmd_rollout_start, start, RolloutStatus)
            await wait_until(lambda: _phase(bus, Phase.PAUSED), 60, what="the checkpoint")
            await wait_until(lambda: tags() == ["-", "v2"], 30, what="the replaced domain destroyed")
        await bus.request(bus.subjects.cmd_rollout_resume, ResumeRollout(), RolloutStatus)
        async with provisioner_bootstrap(settings):
            await wait_until(lambda: _phase(bus, Phase.DONE), 60, what="the rollout done after the restart")
            await wait_until(lambda: _ready_vms(bus, 2), 60, what="two ready VMs")
            await wait_until(lambda: tags() == ["v2", "v2"], 30, what="every domain a clone of v2")


async def _ready_vms(bus: Bus, count: int) -> bool:
    status = await bus.request(bus.subjects.cmd_status, GetStatus(), FleetStatus)
    return len(status.vms) == count and all(v.state is VmState.READY for v in status.vms)
