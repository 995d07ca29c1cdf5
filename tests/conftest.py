"""Fixtures shared by every tier: a real nats-server per test on a free loopback port."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from ops.natsserver import NatsServer
from shared.bus import Bus, connect
from shared.contract.subjects import Subjects
from shared.settings import ServiceSettings
from tests.support import chaos

settings.register_profile("quicfleet", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("quicfleet")


def _interrupted(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a CI runner giving up) stops the run like Ctrl-C, so fixtures still tear down.

    Left to its default, SIGTERM kills pytest on the spot: the session's lab (namespace,
    libvirtd, dnsmasq, QEMU guests) and every nats-server would be left running.
    """
    signal.signal(signal.SIGTERM, _interrupted)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A real nats-server with JetStream on 127.0.0.1, stopped after the test."""
    workdir = tmp_path / "nats"
    workdir.mkdir()
    server = NatsServer(workdir)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings_env(nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """QUICFLEET_* variables pointing at the test's nats-server (for settings and subprocesses)."""
    env = {"QUICFLEET_NATS_URL": nats_server.url, "QUICFLEET_LOG_FORMAT": "json", "QUICFLEET_INSTANCE": "test"}
    env["QUICFLEET_METRICS_PORT"] = "0"  # any free port: parallel runs never fight over 9090
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    """A test client on the nats-server, for sending commands and watching events."""
    settings = ServiceSettings(nats_url=nats_server.url)
    client = Bus(await connect(settings, "quicfleet-test"), Subjects())
    yield client
    await client.drain()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the reliability matrix's rows the chaos scenarios recorded (tests/support/chaos.py)."""
    if chaos.ROWS:
        terminalreporter.section("reliability matrix (chaos)")
        for line in chaos.table_lines(chaos.ROWS):
            terminalreporter.write_line(line)
