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


TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "e2e", "docker")
"""A test's tier is the folder it lives in (tests/<tier>/...): no module repeats it in a `pytestmark`."""
TIER_SECONDS: dict[str, float] = {}


def tier_of(path: Path) -> str | None:
    """The tier of a test file, from its first folder under tests/ (None outside a tier folder)."""
    parts = path.resolve().relative_to(TESTS).parts
    return parts[0] if len(parts) > 1 and parts[0] in TIERS else None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its folder's tier before `-m` selects (so `-m unit` is tests/unit/)."""
    for item in items:
        tier = tier_of(item.path)
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Add each phase's time (setup, call, teardown) to its tier's total, for the summary."""
    tier = tier_of(TESTS.parent / report.location[0])
    if tier is not None:
        TIER_SECONDS[tier] = TIER_SECONDS.get(tier, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the time spent per tier, then the reliability matrix's rows the chaos scenarios recorded."""
    if TIER_SECONDS:
        terminalreporter.section("time per tier")
        for tier in TIERS:
            if tier in TIER_SECONDS:
                terminalreporter.write_line(f"{tier:12} {TIER_SECONDS[tier]:8.1f} s")
    if chaos.ROWS:
        terminalreporter.section("reliability matrix (chaos)")
        for line in chaos.table_lines(chaos.ROWS):
            terminalreporter.write_line(line)
