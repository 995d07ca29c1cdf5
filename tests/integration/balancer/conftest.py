"""Fixtures of the balancer integration tests: a running balancer service and backends to feed it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from services.balancer.bootstrap import bootstrap
from services.balancer.quic import ENGINES
from services.balancer.service import BalancerService
from services.balancer.settings import BalancerSettings
from tests.integration.balancer.harness import StartBalancer


@pytest.fixture(params=ENGINES, autouse=True)
def quic_engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every balancer test runs on each QUIC engine (set in the environment, so subprocesses follow)."""
    monkeypatch.setenv("QUICFLEET_QUIC_ENGINE", request.param)
    return str(request.param)


@pytest.fixture
def start_balancer(settings_env: dict[str, str], tmp_path: Path) -> StartBalancer:
    """`async with start_balancer(**settings) as service:` a balancer on a free UDP port."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[BalancerService]:
        values: dict[str, Any] = {
            "listen_port": 0, "balancer_state_dir": tmp_path / "balancer", "balancer_list_window_s": 0.2,
            "balancer_slow_start_s": 0, "health_interval_s": 60, "health_path": "/healthz",
            "balancer_report_interval_s": 0.5,
        }
        async with bootstrap(BalancerSettings(**(values | overrides))) as service:
            yield service

    return start


