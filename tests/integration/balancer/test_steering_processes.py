"""Real balancer processes on one UDP port: workers and replicas come and go under 50 long-lived client
connections, clients change source port, and no request fails."""

from __future__ import annotations

import asyncio
from pathlib import Path

from shared.bus import Bus
from tests.integration.balancer.harness import list_as_provisioner
from tests.integration.balancer.load import Load
from tests.integration.balancer.processes import CONNECTIONS, Fleet, children, process_env, progress
from tests.support import wait_until
from tests.support.h1server import H1Backend


async def test_workers_and_replicas_come_and_go_without_a_failed_request(
    bus: Bus, settings_env: dict[str, str], tmp_path: Path
) -> None:
    """Two workers, then a replica added and removed, then a worker removed, then every client's source port
    changed: 50 connections each keep a request going throughout and none fails."""
    env = process_env(settings_env, tmp_path)
    fleet = Fleet(bus, env)
    await fleet.listen()
    async with H1Backend() as backend:
        await list_as_provisioner(bus, "vm-a", backend.address)
        runners: list[asyncio.Task[None]] = []
        try:
            first, port = await fleet.start(0, workers=2)
            load = Load(port, path="/slow?ms=20")
            runners += [asyncio.create_task(load.run(rebind=True)) for _ in range(CONNECTIONS)]
            await wait_until(lambda: load.ok >= 2 * CONNECTIONS, timeout=30, what="every connection served")
            replica, _ = await fleet.start(port)
            await progress(load)
            assert await fleet.stop(replica.pid) == 0
            await progress(load)
            (worker,) = children(first.pid)
            await fleet.stop(worker)
            await progress(load)
            load.rebind.set()
            await progress(load)
            load.stop = True
            await asyncio.gather(*runners)
            assert await fleet.stop(first.pid) == 0
        finally:
            for runner in runners:
                runner.cancel()
            fleet.kill_all()
    assert load.failed == [], load.failed[:5]
    assert load.rebound >= CONNECTIONS // 2, "clients changed source port mid-connection"


