"""Driving `docker-compose` for the docker tier: the project's environment, health, the operator's login."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from ops.natsserver import free_port
from tests.docker.engine import BASE_IMAGE, ROOT, Engine

SERVICES = ("nats", "balancer", "metrics", "scaler", "provisioner")


INIT = "nats-auth"
"""The one-shot service that writes the NATS users before nats starts (no healthcheck; exits 0)."""


def skip_or_fail(reason: str) -> None:
    """Skip loudly where docker cannot run; in CI (CI=true) that is a failure."""
    message = f"DOCKER TEST NOT RUN: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def extra_ca_certs() -> str:
    """This machine's extra CA certificates (base64), for pip inside the build."""
    bundle = b"".join(path.read_bytes() for path in sorted(Path("/usr/local/share/ca-certificates").glob("*.crt")))
    return base64.b64encode(bundle).decode()


def compose_env(engine: Engine, project: str, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "libvirt").mkdir()
    return engine.env | {
        "COMPOSE_PROJECT_NAME": project, "QUICFLEET_IMAGE": "quicfleet:test", "BASE_IMAGE": BASE_IMAGE,
        "EXTRA_CA_CERTS_B64": extra_ca_certs(), "NATS_PORT": str(free_port()), "BALANCER_HOST": "127.0.0.1",
        "BALANCER_PORT": str(free_port()), "METRICS_PORT": str(free_port()), "QUICFLEET_LIBVIRT_URI": "test:///default",
        "LIBVIRT_SOCKET_DIR": str(tmp_path / "libvirt"),
    }


def compose(env: dict[str, str], *args: str, timeout: float = 180) -> str:
    result = subprocess.run(["docker-compose", "-f", str(ROOT / "compose.yaml"), *args], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"docker-compose {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def health(engine: Engine, env: dict[str, str]) -> dict[str, str]:
    """Each container's health status by container name."""
    ids = compose(env, "ps", "-q").split()
    states = {}
    for container in ids:
        inspected = json.loads(engine.docker("inspect", container).stdout)[0]
        state = inspected["State"]
        if "Health" not in state and state.get("Status") == "exited" and state.get("ExitCode") == 0:
            continue  # nats-auth, done
        states[inspected["Name"].lstrip("/")] = state.get("Health", {}).get("Status", "none")
    return states


def operator_login(env: dict[str, str]) -> dict[str, str]:
    """The operator's NATS login, read from the nats container (which holds it for its healthcheck)."""
    password = compose(env, "exec", "-T", "nats", "cat", "/etc/quicfleet/auth/operator/password").strip()
    return {"QUICFLEET_NATS_USER": "operator", "QUICFLEET_NATS_PASSWORD": password,
            "QUICFLEET_NATS_INBOX_PREFIX": "_INBOX_operator"}


def wait_healthy(engine: Engine, env: dict[str, str], count: int, timeout: float = 180) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        states = health(engine, env)
        if len(states) == count and set(states.values()) == {"healthy"}:
            return states
        assert time.monotonic() < deadline, f"containers not healthy within {timeout} s: {states}"
        time.sleep(1)
