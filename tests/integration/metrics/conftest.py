"""A metrics service on the test's nats-server with its HTTP server on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from services.metrics.bootstrap import bootstrap
from services.metrics.service import MetricsService
from services.metrics.settings import MetricsSettings


@pytest.fixture
async def metrics(settings_env: dict[str, str]) -> AsyncIterator[MetricsService]:
    """The metrics service (1 s snapshots, 10 s window), started and drained around the test."""
    async with bootstrap(MetricsSettings(metrics_port=0, metrics_host="127.0.0.1")) as service:
        yield service


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for the metrics server (loopback only)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session
