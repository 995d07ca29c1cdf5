"""B3: absurd scale requests are refused; a burst of 1,000 scale commands never puts more VMs in libvirt
than the ceiling, and the fleet settles at the last size accepted."""

from __future__ import annotations

import asyncio
import json
import random
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import libvirt
import pytest

from ops.natsserver import NatsServer
from services.provisioner.bootstrap import bootstrap as provisioner_bootstrap
from services.scaler.bootstrap import bootstrap as scaler_bootstrap
from services.scaler.settings import ScalerSettings
from shared.bus import Bus
from shared.contract.commands import GetStatus, PolicyPatch
from shared.contract.events import VmState
from shared.contract.policy import ScalingPolicy
from shared.contract.status import DesiredState, FleetStatus
from tests.integration.chaos.probe import bounded, invalid_reply_problem
from tests.support import chaos, wait_until
from tests.support.h3server import H3Backend

pytestmark = pytest.mark.chaos

CEILING = 3
"""max_replicas and the provisioner's max_vms: test:///default has room for three 1 MiB VMs."""
ABSURD: list[Any] = [-1, 10**9, 1.5, "3", None, True, float("nan"), 2**64, [], {}, "", -0.0]
BURST = 1000


class Peak:
    """The most of our domains libvirt ever held, from its own lifecycle events (defined, undefined)."""

    def __init__(self, conn: libvirt.virConnect, prefix: str) -> None:
        self.conn, self.prefix = conn, prefix
        self.live: set[str] = set()
        self.most = self.events = 0
        self._id = conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._event, None)

    def _event(self, _conn: Any, dom: libvirt.virDomain, event: int, _detail: int, _opaque: Any) -> None:
        name = dom.name()
        if not name.startswith(self.prefix):
            return
        self.events += 1
        if event == libvirt.VIR_DOMAIN_EVENT_DEFINED:
            self.live.add(name)
        elif event == libvirt.VIR_DOMAIN_EVENT_UNDEFINED:
            self.live.discard(name)
        self.most = max(self.most, len(self.live))

    def close(self) -> None:
        self.conn.domainEventDeregisterAny(self._id)


async def _absurd(bus: Bus) -> list[str]:
    """Send each absurd `replicas`; return what was wrong with any answer."""
    problems = []
    for value in ABSURD:
        msg = await bus.nc.request(bus.subjects.cmd_scale, json.dumps({"replicas": value}).encode(), timeout=10)
        problem = invalid_reply_problem(msg)
        if problem or b"replicas" not in msg.data:
            problems.append(f"{value!r}: {problem or msg.data[:200]!r}")
    return problems


async def _burst(bus: Bus, rng: random.Random) -> tuple[list[DesiredState], int, float]:
    """1,000 scale commands (sizes 0..ceiling+2) sent within a second: accepted states, refusals, seconds to send."""
    sizes = [rng.randrange(CEILING + 3) for _ in range(BURST)]
    accepted: list[DesiredState] = []
    refused = 0

    async def one(size: int) -> None:
        nonlocal refused
        msg = await bus.nc.request(bus.subjects.cmd_scale, json.dumps({"replicas": size}).encode(), timeout=30)
        reply = json.loads(msg.data)
        if reply["ok"]:
            accepted.append(DesiredState.model_validate(reply["result"]))
        else:
            assert size > CEILING or reply["error"]["code"] == "conflict", reply
            refused += 1

    started = time.monotonic()
    tasks = []
    for chunk in range(0, BURST, 50):
        tasks.append(asyncio.create_task(bounded(sizes[chunk:chunk + 50], one, 50)))
        await asyncio.sleep(max(0.0, started + (chunk + 50) / BURST - time.monotonic()))
    sent_s = time.monotonic() - started
    await asyncio.gather(*tasks)
    return accepted, refused, sent_s


async def _settled(bus: Bus, world: Any, size: int) -> bool:
    status = await bus.request(bus.subjects.cmd_status, GetStatus(), FleetStatus)
    ready = [v for v in status.vms if v.state is VmState.READY]
    return status.desired == size and len(ready) == len(status.vms) == size and len(world.ours()) == size


async def test_absurd_and_flooded_scale_commands_stay_within_the_ceiling(
    bus: Bus, nats_server: NatsServer, world: Any, tmp_path: Path, settings_env: dict[str, str]
) -> None:
    """Absurd sizes get clear `invalid` errors; 1,000 scales in 1 s never exceed the ceiling and end at the last one."""
    async with AsyncExitStack() as stack:
        backends = [await stack.enter_async_context(H3Backend(tmp_path)) for _ in range(CEILING)]
        pool = ",".join(b.address for b in backends)
        settings = world.settings(nats_server, static_addresses=pool, max_vms=CEILING)
        await stack.enter_async_context(provisioner_bootstrap(settings))
        scaler = await stack.enter_async_context(scaler_bootstrap(ScalerSettings(scaler_id="s1", lease_ttl_s=2)))
        await wait_until(lambda: scaler.leading, 20, what="leadership")
        patch = PolicyPatch(min_replicas=0, max_replicas=CEILING, drain_timeout_s=1)
        await bus.request(bus.subjects.cmd_policy, patch, ScalingPolicy)
        problems = await _absurd(bus)
        peak = Peak(world.conn, settings.vm_prefix)
        started = time.monotonic()
        accepted, refused, sent_s = await _burst(bus, random.Random(20))
        burst_s = time.monotonic() - started
        final = max(accepted, key=lambda s: s.updated_at).desired
        await wait_until(lambda: _settled(bus, world, final), 90, 0.2, f"the fleet settled at {final}")
        await wait_until(lambda: len(peak.live) == final, 10, what="libvirt's events caught up")
        peak.close()
    assert problems == []
    assert peak.events > 0 and peak.most <= CEILING
    chaos.record(chaos.Row(
        scenario="B3", title="absurd and flooded scale commands", load="scaler + provisioner (test driver)",
        inputs=len(ABSURD) + BURST, invariants={"I4": "pass"},
        figures=f"{len(ABSURD)} absurd sizes refused; {BURST} sent in {sent_s:.2f} s, answered in {burst_s:.1f} s: "
                f"{len(accepted)} accepted, {refused} refused; peak {peak.most} VMs (ceiling {CEILING}); "
                f"settled at {final}; {peak.events} libvirt domain events",
    ))
