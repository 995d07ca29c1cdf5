"""Reliability matrix F8: the balancer restarted under load with 10% long (2 s) requests, as a
rolling restart does it (the new process binds the port, then the old one gets SIGTERM, drains and
exits), again and again; no request a balancer accepted is dropped."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shared.bus import Bus
from tests.integration.balancer.harness import list_as_provisioner
from tests.integration.balancer.load import Load
from tests.integration.balancer.processes import Fleet, process_env, progress
from tests.support import wait_until
from tests.support.chaos import Row, long_variants, record
from tests.support.h1server import H1Backend

pytestmark = pytest.mark.chaos

SHORT_CONNECTIONS, LONG_CONNECTIONS = 45, 5
"""50 connections, each keeping one request going: 10% of them on 2 s requests."""


async def test_f8_balancer_restarted_under_load_with_long_requests_drops_nothing(
    bus: Bus, settings_env: dict[str, str], tmp_path: Path, quic_engine: str
) -> None:
    """Each restart (new process on the port, old one SIGTERMed) lets every 2 s request in flight finish and
    sends clients away with GOAWAY: no request fails, short or long, over several restarts."""
    env = process_env(settings_env, tmp_path)
    restarts = 6 if long_variants() else 2
    fleet = Fleet(bus, env)
    await fleet.listen()
    async with H1Backend() as backend:
        await list_as_provisioner(bus, "vm-a", backend.address)
        runners: list[asyncio.Task[None]] = []
        try:
            current, port = await fleet.start(0)
            short, long = Load(port, path="/slow?ms=20"), Load(port, path="/slow?ms=2000")
            runners += [asyncio.create_task(short.run()) for _ in range(SHORT_CONNECTIONS)]
            runners += [asyncio.create_task(long.run()) for _ in range(LONG_CONNECTIONS)]
            await wait_until(lambda: long.ok >= LONG_CONNECTIONS, timeout=30, what="every long connection served")
            for _ in range(restarts):
                replacement, _ = await fleet.start(port)
                assert await fleet.stop(current.pid) == 0
                current = replacement
                await progress(short)
                await more_answers(long, LONG_CONNECTIONS)
            short.stop = long.stop = True
            await asyncio.gather(*runners)
        finally:
            for runner in runners:
                runner.cancel()
            fleet.kill_all()
    record(Row("F8", f"balancer restarted under load, 10% 2 s requests ({quic_engine})",
               load=f"{SHORT_CONNECTIONS}x 20 ms + {LONG_CONNECTIONS}x 2 s requests in a loop", faults=restarts,
               invariants={"I2": "pass" if not (short.failed or long.failed) else "fail"},
               figures=f"{short.ok} short and {long.ok} long requests ok, "
                       f"{len(short.failed) + len(long.failed)} failed; {short.moved + long.moved} GOAWAYs honoured"))
    assert short.failed == [] and long.failed == [], (short.failed[:5], long.failed[:5])
    assert long.moved >= LONG_CONNECTIONS, "every long connection was sent away by a draining process"


async def more_answers(load: Load, count: int) -> None:
    """Wait until `load` got `count` more answers."""
    target = load.ok + count
    await wait_until(lambda: load.ok >= target, timeout=30, what=f"{count} more answers")
