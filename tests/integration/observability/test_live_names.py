"""Every metric the Grafana dashboards and the Prometheus rules name is on a live `/metrics` page of a real stack.

The unit check (tests/unit/test_observability_kit.py) reads names from the code; this one scrapes what the
running services really expose: a provisioner on libvirt's test driver, a scaler leading it, the metrics
service and a balancer, each with its /metrics on a free loopback port, after the scaler made one VM (a real
HTTP/3 server on loopback) and one request went through the balancer to it, so per-request series exist.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp

from ops.natsserver import NatsServer
from services.balancer.bootstrap import bootstrap as balancer_bootstrap
from services.balancer.settings import BalancerSettings
from services.metrics.bootstrap import bootstrap as metrics_bootstrap
from services.metrics.settings import MetricsSettings
from services.provisioner.bootstrap import bootstrap as provisioner_bootstrap
from services.scaler.bootstrap import bootstrap as scaler_bootstrap
from services.scaler.settings import ScalerSettings
from shared.bus import Bus
from shared.contract.commands import ScaleFleet
from shared.contract.status import DesiredState
from tests.integration.balancer.h3client import h3_client
from tests.support import wait_until
from tests.support.h3server import H3Backend
from tests.support.metricnames import dashboard_queries, query_names, rule_queries, scraped_names

PER_REQUEST = {"quicfleet_backend_requests_total", "quicfleet_request_duration_seconds_bucket"}
"""Series that exist only once a request was served: they must have samples, not only a declaration."""


async def scrape(port: int) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        return await response.text()


async def test_every_dashboard_and_rule_metric_is_on_a_live_metrics_page(
    bus: Bus, nats_server: NatsServer, world: Any, tmp_path: Path, settings_env: dict[str, str]
) -> None:
    """The names in deploy/grafana/*.json and deploy/prometheus/*rules*.yml all appear in the four services'
    live scrapes (counters by `_total`, histograms by `_bucket`/`_sum`/`_count`), per-request ones with samples."""
    async with AsyncExitStack() as stack:
        vm = await stack.enter_async_context(H3Backend(tmp_path))
        provisioner = await stack.enter_async_context(provisioner_bootstrap(
            world.settings(nats_server, static_addresses=vm.address, provisioner_metrics_port=0)))
        scaler = await stack.enter_async_context(
            scaler_bootstrap(ScalerSettings(scaler_id="live", lease_ttl_s=2, scaler_metrics_port=0)))
        metrics = await stack.enter_async_context(
            metrics_bootstrap(MetricsSettings(metrics_port=0, metrics_host="127.0.0.1", metrics_interval_s=0.5)))
        balancer = await stack.enter_async_context(balancer_bootstrap(BalancerSettings(
            listen_port=0, balancer_metrics_port=0, upstream_protocol="http3", balancer_state_dir=tmp_path / "lb",
            balancer_list_window_s=0.2, balancer_slow_start_s=0, health_interval_s=60,
            balancer_report_interval_s=0.3)))
        await wait_until(lambda: scaler.leading, 20, what="leadership")
        await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=1), DesiredState)
        await wait_until(lambda: any(not b.draining for b in balancer.router.table.backends.values()), 30,
                         what="the scaler's VM routable at the balancer")
        async with h3_client(balancer.port) as client:
            assert (await client.get("/")).status == 200
        assert provisioner.metrics is not None and scaler.telemetry.server is not None
        assert balancer.metrics_port is not None
        ports = {"balancer": balancer.metrics_port, "metrics": metrics.http.port,
                 "provisioner": provisioner.metrics.port, "scaler": scaler.telemetry.server.port}

        async def counted() -> bool:
            return "quicfleet_backend_requests_total" in scraped_names(await scrape(ports["metrics"]))[1]

        await wait_until(counted, 20, what="the request on the metrics service's /metrics")
        pages = {name: scraped_names(await scrape(port)) for name, port in ports.items()}
    live = set().union(*(names for names, _ in pages.values()))
    sampled = set().union(*(samples for _, samples in pages.values()))
    named = {name for expr in dashboard_queries() + rule_queries() for name in query_names(expr)}
    assert named, "no metric names found in the dashboards and rules"
    assert sorted(named - live) == [], {service: sorted(names) for service, (names, _) in pages.items()}
    assert sampled >= PER_REQUEST
    assert all(named & names for names, _ in pages.values()), "a service's page serves no named metric"
