"""Helpers of the metrics integration tests: publish synthetic reports, collect messages, scrape /metrics."""

from __future__ import annotations

from collections.abc import Iterable

import aiohttp
from nats.aio.msg import Msg
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from services.metrics.service import MetricsService
from shared.bus import Bus, encode
from tests.support import Collector


async def publish_reports(bus: Bus, reports: Iterable[BaseModel | bytes]) -> None:
    """Publish reports (models, or raw bytes for garbage) on the balancer report subject."""
    for item in reports:
        await bus.nc.publish(bus.subjects.balancer_report, item if isinstance(item, bytes) else encode(item))
    await bus.nc.flush()


async def collect(bus: Bus, subject: str) -> Collector:
    """Collect every message on `subject` from now on."""
    collector = Collector()

    async def received(msg: Msg) -> None:
        await collector(msg)

    await bus.nc.subscribe(subject, cb=received)
    return collector


async def scrape(http: aiohttp.ClientSession, service: MetricsService) -> dict[str, dict[str, float]]:
    """`/metrics` parsed back with prometheus-client: sample name + vm/state label -> value."""
    assert service.http is not None
    async with http.get(f"{service.http.url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    parsed: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.labels.get("vm") or sample.labels.get("state") or ""
            if "le" not in sample.labels:
                parsed.setdefault(sample.name, {})[key] = sample.value
    return parsed
