"""The balancer's /metrics: loopback by default, and replicas given one fixed port each find a free one."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from structlog.testing import capture_logs

from services.balancer.settings import BalancerSettings
from tests.integration.balancer.harness import StartBalancer


def _free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _scrape(port: int) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        return await response.text()


def test_metrics_bind_loopback_unless_told_otherwise() -> None:
    """Without BALANCER_METRICS_HOST the metrics address is 127.0.0.1, whatever the listen address."""
    assert BalancerSettings(listen_host="0.0.0.0").balancer_metrics_host == "127.0.0.1"


async def test_two_balancers_on_one_fixed_metrics_port_both_serve(start_balancer: StartBalancer) -> None:
    """The second balancer given a taken metrics port takes the next free one, logs it, and both answer."""
    port = _free_tcp_port()
    async with start_balancer(balancer_metrics_port=port) as first:
        with capture_logs() as logs:
            async with start_balancer(balancer_metrics_port=port) as second:
                assert first.metrics_port is not None and second.metrics_port is not None
                assert port <= first.metrics_port < second.metrics_port < port + 16
                for lb in (first, second):
                    assert "quicfleet_balancer_requests" in await _scrape(lb.metrics_port)
    listening = [e for e in logs if e["event"] == "metrics.listening"]
    assert [(e["port"], e["requested"]) for e in listening] == [(second.metrics_port, port)]


async def test_a_taken_metrics_port_with_no_span_left_fails_the_start(start_balancer: StartBalancer) -> None:
    """With a span of one port and that port taken, the balancer does not start (and stops cleanly)."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(OSError):
            async with start_balancer(balancer_metrics_port=port, balancer_metrics_port_span=1):
                pass
