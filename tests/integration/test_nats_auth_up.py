"""`quicfleet up` and NATS authorisation: the same users on every start of a run directory, and an explicit opt-out."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats

from ops.natsserver import free_port
from tests.integration.cli.support import cli
from tests.support import wait_until


@asynccontextmanager
async def up(workdir: Path, port: int, log: Path, *flags: str, env: dict[str, str] | None = None) -> AsyncIterator[str]:
    """`quicfleet up --no-lab` on `port` until it says it is up; SIGTERM (exit 0 asserted) at the end."""
    environment = os.environ | {"QUICFLEET_LISTEN_PORT": "0", "QUICFLEET_METRICS_PORT": "0",
                                "QUICFLEET_LIBVIRT_URI": "", "COLUMNS": "300"} | (env or {})
    with log.open("wb") as sink:
        stack = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ops.cli", "up", "--no-lab", "--workdir", str(workdir), "--nats-port", str(port),
            *flags, env=environment, stdout=sink, stderr=asyncio.subprocess.STDOUT,
        )
    try:
        await wait_until(lambda: "quicfleet is up" in log.read_text() or stack.returncode is not None, timeout=120,
                         what="the stack to come up")
        assert "quicfleet is up" in log.read_text(), log.read_text()[-3000:]
        yield f"nats://127.0.0.1:{port}"
    finally:
        stack.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(stack.wait(), 60)
    assert code == 0, log.read_text()[-3000:]


async def anonymous_allowed(url: str) -> bool:
    try:
        nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0)
    except nats.errors.Error:
        return False
    await nc.close()
    return True


async def test_a_second_start_of_the_same_run_reuses_every_password(tmp_path: Path) -> None:
    """`up` started twice on one run directory keeps every user's password (services and CLI still log in) and
    refuses anonymous clients both times."""
    workdir, port = tmp_path / "run", free_port()
    async with up(workdir, port, tmp_path / "first.log") as url:
        first = {p.parent.name: p.read_text() for p in (workdir / "nats-auth").glob("*/password")}
        assert not await anonymous_allowed(url)
    async with up(workdir, port, tmp_path / "second.log") as url:
        second = {p.parent.name: p.read_text() for p in (workdir / "nats-auth").glob("*/password")}
        health = await cli(url, "health", "--window", "10")
        assert not await anonymous_allowed(url)
    assert set(first) == {"balancer", "metrics", "scaler", "provisioner", "operator", "route"}
    assert second == first
    assert health.code == 0 and "balancer, metrics, provisioner, scaler" in health.out, health.err


async def test_nats_auth_off_runs_an_open_server_and_says_so(tmp_path: Path) -> None:
    """QUICFLEET_NATS_AUTH=off (as `--nats-auth off`) starts NATS without users, says so loudly, and writes no
    passwords; the services and the CLI work without a login."""
    workdir, port = tmp_path / "run", free_port()
    async with up(workdir, port, tmp_path / "up.log", env={"QUICFLEET_NATS_AUTH": "off"}) as url:
        health = await cli(url, "health", "--window", "10")
        assert await anonymous_allowed(url)
    assert "NATS authorisation is off" in (tmp_path / "up.log").read_text()
    assert not (workdir / "nats-auth").exists()
    assert health.code == 0, health.err
