"""SIGTERM and the TCP listener: requests in flight over HTTP/1.1 get the same share of the shutdown grace as QUIC's."""

from __future__ import annotations

import asyncio
import signal
import ssl
from pathlib import Path

from shared.bus import Bus
from tests.integration.balancer.admin import Http1
from tests.integration.balancer.harness import list_as_provisioner
from tests.integration.balancer.processes import Fleet, process_env
from tests.support import wait_until
from tests.support.h1server import H1Backend

SLOW_MS = 3000
"""Longer than the fixed 2 s the TCP listener used to give, shorter than half of a 10 s grace."""


async def _in_flight_at_sigterm(bus: Bus, env: dict[str, str]) -> tuple[int | str, int]:
    """Start a balancer process, send a 3 s request over HTTP/1.1, SIGTERM the process while the VM holds it:
    the response's status (or the name of the error that cut it) and the process's exit code."""
    fleet = Fleet(bus, env)
    await fleet.listen()
    async with H1Backend() as backend:
        await list_as_provisioner(bus, "vm-1", backend.address)
        proc, port = await fleet.start(0)
        try:
            client = await Http1.open(port)
            client.send(f"/slow?ms={SLOW_MS}")
            await wait_until(lambda: "/slow" in backend.paths, timeout=10, what="the request at the VM")
            proc.send_signal(signal.SIGTERM)
            outcome: int | str
            try:
                outcome = (await client.response(timeout=30))[0]
            except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError) as error:
                outcome = type(error).__name__
            return outcome, await asyncio.to_thread(proc.wait, 30)
        finally:
            fleet.kill_all()


async def test_a_3s_request_survives_sigterm_when_half_the_grace_covers_it(
    bus: Bus, settings_env: dict[str, str], tmp_path: Path
) -> None:
    """With shutdown_grace_s 10 (5 s for requests in flight) a 3 s HTTP/1.1 request gets its 200 and the process
    exits 0 after it."""
    env = process_env(settings_env, tmp_path) | {"QUICFLEET_SHUTDOWN_GRACE_S": "10"}
    assert await _in_flight_at_sigterm(bus, env) == (200, 0)


async def test_a_request_longer_than_half_the_grace_is_cut(
    bus: Bus, settings_env: dict[str, str], tmp_path: Path
) -> None:
    """With shutdown_grace_s 3 (1.5 s for requests in flight) the same request is cut, not answered: the rule is
    the grace, and the drain still ends with exit 0."""
    env = process_env(settings_env, tmp_path) | {"QUICFLEET_SHUTDOWN_GRACE_S": "3"}
    outcome, code = await _in_flight_at_sigterm(bus, env)
    assert outcome != 200 and code == 0
