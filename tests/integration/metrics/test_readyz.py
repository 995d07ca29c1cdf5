"""The metrics service's `/readyz`: 200 while connected and serving, 503 `draining` from the start of its stop.

A real `python -m services.metrics` process gets a real SIGTERM. To see the stop's first step from
outside, the test's nats-server is frozen (SIGSTOP) before the signal: the stop's first NATS round
trip (unregistering the micro service) then waits, as it would on a slow or partitioned server,
while the HTTP server still answers. The server is thawed and the process must still exit 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiohttp

from ops.natsserver import NatsServer
from tests.support.servicelog import next_event

ROOT = Path(__file__).resolve().parents[3]


@asynccontextmanager
async def metrics_process(env: dict[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m services.metrics` with its JSON log on a pipe; killed if the test leaves it running."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.metrics", cwd=ROOT, env=os.environ | env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@contextmanager
def frozen(server: NatsServer) -> Iterator[None]:
    """The nats-server stopped in its tracks (SIGSTOP): connections stay open, nothing is answered."""
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        server.process.send_signal(signal.SIGCONT)


async def readyz(http: aiohttp.ClientSession, port: int) -> tuple[int, object]:
    async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
        return response.status, await response.json()


async def test_readyz_is_200_while_serving_and_503_once_the_stop_begins(
    settings_env: dict[str, str], nats_server: NatsServer, http: aiohttp.ClientSession
) -> None:
    """Connected: 200; SIGTERM flips it to 503 `draining` while the HTTP server still answers; then exit 0."""
    async with metrics_process(settings_env) as proc:
        assert proc.stdout is not None
        port = int((await next_event(proc.stdout, "http.listening"))["port"])
        await next_event(proc.stdout, "service.started")
        assert await readyz(http, port) == (200, {"ready": True})
        with frozen(nats_server):
            proc.send_signal(signal.SIGTERM)
            await next_event(proc.stdout, "service.stopping", timeout=10)
            assert await readyz(http, port) == (503, {"ready": False, "reason": "draining"})
            assert proc.returncode is None, "the process left before readiness could say draining"
        remaining = asyncio.create_task(proc.stdout.read())  # keep the pipe drained while it finishes
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
        await remaining
