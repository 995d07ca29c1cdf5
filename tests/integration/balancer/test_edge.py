"""Edge features over real HTTP/3: 5xx ejection, panic, forwarding trust, request ids, access log, /metrics."""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

import aiohttp
from structlog.testing import capture_logs

from shared.bus import Bus
from tests.integration.balancer.h3client import h3_client
from tests.integration.balancer.harness import StartBalancer, announce
from tests.support import wait_until
from tests.support.h1server import H1Backend

SPOOFED = [(b"x-forwarded-for", b"6.6.6.6"), (b"x-real-ip", b"6.6.6.6"), (b"x-request-id", b"picked-by-client")]


async def test_a_vm_answering_5xx_is_ejected_and_its_500s_reach_the_client(
    bus: Bus, start_balancer: StartBalancer
) -> None:
    """Two 500s in a row eject the VM; both 500s reach the client unchanged and later requests go to the good VM."""
    settings = {"ejection_consecutive_5xx": 2, "balancer_policy": "round_robin", "balancer_panic_threshold": 0}
    async with H1Backend(status=500) as bad, H1Backend() as good, start_balancer(**settings) as lb:
        await announce(bus, lb, "vm-bad", bad.address)
        await announce(bus, lb, "vm-good", good.address)
        async with h3_client(lb.port) as client:
            responses = [await client.get("/") for _ in range(10)]
        backend = lb.router.table.get("vm-bad")
    assert [r.status for r in responses].count(500) == 2
    assert all(r.headers[b"x-quicfleet-backend"] == b"vm-bad" for r in responses if r.status == 500)
    assert {r.headers[b"x-quicfleet-backend"] for r in responses[-6:]} == {b"vm-good"}
    assert backend is not None and backend.health.ejections == 1
    assert lb.router.telemetry.ejections == {"vm-bad": 1}


async def test_panic_serves_from_an_unhealthy_only_vm_instead_of_503(
    bus: Bus, start_balancer: StartBalancer
) -> None:
    """With its only VM failing active checks, the balancer in panic still proxies the request (200, not 503)."""
    async with H1Backend() as backend, start_balancer(health_fall=1) as lb:
        await announce(bus, lb, "vm-a", backend.address)
        vm = lb.router.table.get("vm-a")
        assert vm is not None and vm.health.check_failed()
        async with h3_client(lb.port) as client:
            response = await client.get("/")
    assert response.status == 200 and response.headers[b"x-quicfleet-backend"] == b"vm-a"
    assert lb.router.panicking and lb.router.telemetry.panics == 1


async def test_spoofed_forwarding_headers_and_request_id_are_replaced(bus: Bus, start_balancer: StartBalancer) -> None:
    """A client's own x-forwarded-for, x-real-ip and x-request-id never reach the VM; it gets back the VM's id."""
    async with H1Backend() as backend, start_balancer() as lb:
        await announce(bus, lb, "vm-a", backend.address)
        async with h3_client(lb.port) as client:
            response = await client.get("/", SPOOFED)
    seen = backend.last_headers
    assert seen[b"x-forwarded-for"] == b"127.0.0.1" and seen[b"x-real-ip"] == b"127.0.0.1"
    assert re.fullmatch(rb"[0-9a-f]{32}", seen[b"x-request-id"])
    assert response.headers[b"x-request-id"] == seen[b"x-request-id"]


async def test_a_trusted_proxy_keeps_its_chain_and_request_id(bus: Bus, start_balancer: StartBalancer) -> None:
    """From a peer in BALANCER_TRUSTED_PROXIES the chain gets the peer appended and the request id is kept."""
    async with H1Backend() as backend, start_balancer(balancer_trusted_proxies="127.0.0.0/8") as lb:
        await announce(bus, lb, "vm-a", backend.address)
        async with h3_client(lb.port) as client:
            response = await client.get("/", SPOOFED)
    seen = backend.last_headers
    assert seen[b"x-forwarded-for"] == b"6.6.6.6, 127.0.0.1" and seen[b"x-real-ip"] == b"6.6.6.6"
    assert seen[b"x-request-id"] == b"picked-by-client" == response.headers[b"x-request-id"]


async def test_each_request_gets_one_access_log_line(bus: Bus, start_balancer: StartBalancer) -> None:
    """A proxied request is logged once on `balancer.access` with the id the client got and what was sent."""
    async with H1Backend() as backend, start_balancer() as lb:
        await announce(bus, lb, "vm-a", backend.address)
        with capture_logs() as logs:
            async with h3_client(lb.port) as client:
                response = await client.get("/slow?ms=5")

            def lines() -> list[MutableMapping[str, Any]]:
                return [e for e in logs if e["event"] == "access"]

            await wait_until(lines, timeout=10, what="the access log line")
    (line,) = lines()
    assert line["request_id"] == response.headers[b"x-request-id"].decode()
    expected = {"client": "127.0.0.1", "protocol": "h3", "method": "GET", "authority": "localhost",
                "path": "/slow?ms=5", "status": 200, "bytes": len(response.body), "vm": "vm-a", "attempts": 1}
    assert {k: line[k] for k in expected} == expected
    assert isinstance(line["first_byte_s"], float) and isinstance(line["duration_s"], float)
    assert line["first_byte_s"] <= line["duration_s"]


async def test_metrics_endpoint_counts_requests_by_vm_and_class(bus: Bus, start_balancer: StartBalancer) -> None:
    """/metrics on BALANCER_METRICS_PORT counts a 503 without VM and proxied 200s per VM, with their bytes."""
    async with H1Backend() as backend, start_balancer(balancer_metrics_port=0) as lb:
        async with h3_client(lb.port) as client:
            refused = await client.get("/")
            await announce(bus, lb, "vm-a", backend.address)
            answered = [await client.get("/") for _ in range(3)]
        assert isinstance(lb.metrics_port, int) and lb.metrics_port > 0
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{lb.metrics_port}/metrics") as r:
            assert r.status == 200
            text = await r.text()
    assert refused.status == 503 and {a.status for a in answered} == {200}
    assert 'quicfleet_balancer_requests_total{code_class="5xx",protocol="h3",vm=""} 1.0' in text
    assert 'quicfleet_balancer_requests_total{code_class="2xx",protocol="h3",vm="vm-a"} 3.0' in text
    sent = len(refused.body) + sum(len(a.body) for a in answered)
    assert f"quicfleet_balancer_response_bytes_total {float(sent)}" in text
    assert "quicfleet_balancer_request_duration_seconds_count 4.0" in text


async def test_metrics_are_off_by_default(start_balancer: StartBalancer) -> None:
    """Without BALANCER_METRICS_PORT no metrics server is started."""
    async with start_balancer() as lb:
        assert lb.metrics_port is None
