"""compose.yaml and the Dockerfile for real: a private dockerd, a build, up, scale and down."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from tests.docker.compose import (
    INIT,
    SERVICES,
    compose,
    compose_env,
    operator_login,
    skip_or_fail,
    wait_healthy,
)
from tests.docker.engine import ROOT, Engine, why_not


@pytest.fixture
def engine() -> Iterator[Engine]:
    reason = why_not()
    if reason:
        skip_or_fail(reason)
    engine = Engine()
    try:
        engine.start()
    except RuntimeError as error:
        engine.stop()
        skip_or_fail(str(error))
    yield engine
    engine.stop()
    assert engine.leftover_processes() == [], "dockerd, containerd or a shim outlived the test"
    assert engine.mounts() == [], "the engine left mounts behind"


async def refuses_anonymous(url: str) -> bool:
    """NATS refuses a client that does not log in."""
    try:
        nc = await nats.connect(url, connect_timeout=5, allow_reconnect=False, max_reconnect_attempts=0)
    except nats.errors.Error as error:
        return "authorization" in str(error).lower()
    await nc.close()
    return False


async def fleet_view(url: str, login: dict[str, str], window: float = 3.0) -> tuple[dict[str, object], Counter[str]]:
    """The `fleet.cmd.status` reply and how many distinct instances of each service answer $SRV.PING (as operator)."""
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=1, user=login["QUICFLEET_NATS_USER"],
                            password=login["QUICFLEET_NATS_PASSWORD"],
                            inbox_prefix=login["QUICFLEET_NATS_INBOX_PREFIX"])
    try:
        reply = json.loads((await nc.request("fleet.cmd.status", b"{}", timeout=10)).data)
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish("$SRV.PING", b"", reply=inbox)
        ids: dict[str, str] = {}
        deadline = time.monotonic() + window
        while (left := deadline - time.monotonic()) > 0:
            try:
                pong = json.loads((await sub.next_msg(timeout=left)).data)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            ids[pong["id"]] = pong["name"]
        return reply, Counter(ids.values())
    finally:
        await nc.close()


def test_compose_file_is_valid_for_docker_compose_v1() -> None:
    """`docker-compose config` (Compose v1 1.29) accepts compose.yaml with its defaults."""
    reason = why_not()
    if reason and "docker-compose" in reason:
        skip_or_fail(reason)
    result = subprocess.run(["docker-compose", "-f", str(ROOT / "compose.yaml"), "config", "--services"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == sorted((*SERVICES, INIT))


def test_stack_builds_comes_up_healthy_scales_and_goes_away(engine: Engine, tmp_path: Path) -> None:
    """Build on a bare Debian base, `up`: all healthy, NATS refuses a client without a login, status answers the
    operator, four services register, each service sees only its own password;
    `--scale scaler=2 --scale balancer=3 --scale metrics=2` adds replicas (metrics sharing its HTTP port);
    `down -v` leaves no container or volume."""
    project = f"qftest{os.getpid()}"
    env = compose_env(engine, project, tmp_path)
    url = f"nats://127.0.0.1:{env['NATS_PORT']}"
    engine.ensure_base_image()
    try:
        compose(env, "build", "nats", timeout=900)
        compose(env, "up", "-d")
        wait_healthy(engine, env, count=5)
        login = operator_login(env)
        assert asyncio.run(refuses_anonymous(url))
        reply, services = asyncio.run(fleet_view(url, login))
        assert compose(env, "exec", "-T", "scaler", "ls", "/run/quicfleet/nats-auth").split() == ["scaler"]
        result = reply["result"]
        assert reply["ok"] is True and isinstance(result, dict) and "desired" in result
        assert all(services[name] >= 1 for name in SERVICES if name != "nats"), services
        compose(env, "up", "-d", "--scale", "scaler=2", "--scale", "balancer=3", "--scale", "metrics=2")
        wait_healthy(engine, env, count=9)
        _, services = asyncio.run(fleet_view(url, login))
        assert services["scaler"] == 2 and services["balancer"] == 3 and services["metrics"] == 2, services
    finally:
        compose(env, "down", "-v", "--remove-orphans", "--timeout", "30")
    leftovers = engine.docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}").stdout.split()
    volumes = engine.docker("volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={project}").stdout
    assert leftovers == [] and volumes.split() == []
