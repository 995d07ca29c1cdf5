"""The balancer proxies real HTTP/3 clients to real HTTP/1.1 and HTTP/3 backends on loopback."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import niquests
import pytest

from shared.bus import Bus
from tests.integration.balancer.h3client import h3_client
from tests.integration.balancer.harness import StartBalancer, announce
from tests.support import wait_until
from tests.support.h1server import H1Backend
from tests.support.h3server import H3Backend


def _niquests_get(url: str, count: int = 1) -> list[niquests.Response]:
    with niquests.Session(disable_http1=True, disable_http2=True) as session:
        return [session.get(url, verify=False, timeout=10) for _ in range(count)]


async def test_niquests_get_returns_backend_answer_over_http3(bus: Bus, start_balancer: StartBalancer) -> None:
    """A niquests GET with HTTP/3 forced gets the HTTP/1.1 backend's `Server Address` body and the backend header."""
    async with H1Backend() as backend, start_balancer() as balancer:
        await announce(bus, balancer, "vm-a", backend.address)
        (response,) = await asyncio.to_thread(_niquests_get, f"https://127.0.0.1:{balancer.port}/")
    assert response.http_version == 30
    assert response.status_code == 200
    assert (response.text or "").strip() == f"Server Address: {backend.address}"
    assert response.headers["x-quicfleet-backend"] == "vm-a"
    assert "quicfleet" in response.headers["via"]


async def test_requests_spread_over_http1_backends(bus: Bus, start_balancer: StartBalancer) -> None:
    """Concurrent requests from an aioquic client reach every one of three HTTP/1.1 backends."""
    async with H1Backend() as a, H1Backend() as b, H1Backend() as c, start_balancer() as balancer:
        for name, backend in (("vm-a", a), ("vm-b", b), ("vm-c", c)):
            await announce(bus, balancer, name, backend.address)
        async with h3_client(balancer.port) as client:
            responses = await asyncio.gather(*(client.get("/") for _ in range(90)))
    assert {r.status for r in responses} == {200}
    seen = Counter(r.headers[b"x-quicfleet-backend"] for r in responses)
    assert set(seen) == {b"vm-a", b"vm-b", b"vm-c"}
    assert a.served() + b.served() + c.served() == 90
    assert a.accepted + b.accepted + c.accepted < 90, "upstream connections are reused"


async def test_http3_upstream_spreads_over_http3_backends(
    bus: Bus, start_balancer: StartBalancer, tmp_path: Path
) -> None:
    """With HTTP/3 upstream, requests reach both aioquic backends and carry their bodies back."""
    async with H3Backend(tmp_path) as a, H3Backend(tmp_path) as b, start_balancer(upstream_protocol="http3") as lb:
        await announce(bus, lb, "vm-a", a.address)
        await announce(bus, lb, "vm-b", b.address)
        async with h3_client(lb.port) as client:
            responses = await asyncio.gather(*(client.get("/") for _ in range(40)))
    assert {r.status for r in responses} == {200}
    bodies = {r.text.strip() for r in responses}
    assert bodies == {f"Server Address: {a.address}", f"Server Address: {b.address}"}
    assert a.requests + b.requests == 40


async def test_forwarding_headers_reach_backend_and_hop_by_hop_do_not(
    bus: Bus, start_balancer: StartBalancer
) -> None:
    """The backend sees x-forwarded-for, forwarded and via but not `te`; the client never sees `connection`."""
    async with H1Backend() as backend, start_balancer() as balancer:
        await announce(bus, balancer, "vm-a", backend.address)
        async with h3_client(balancer.port) as client:
            response = await client.get("/", [(b"x-custom", b"1"), (b"te", b"trailers")])
    assert response.status == 200
    seen = backend.last_headers
    assert seen[b"x-forwarded-for"] == b"127.0.0.1"
    assert seen[b"forwarded"].startswith(b"for=127.0.0.1;proto=https")
    assert seen[b"via"] == b"3 quicfleet-test"
    assert seen[b"x-custom"] == b"1"
    assert b"te" not in seen
    assert b"connection" not in response.headers and response.headers[b"via"] == b"3 quicfleet-test"


async def test_no_backend_gives_503(start_balancer: StartBalancer) -> None:
    """With no ready VM the balancer answers 503 with a short body."""
    async with start_balancer() as balancer, h3_client(balancer.port) as client:
        response = await client.get("/")
    assert response.status == 503
    assert response.text == "no backend available\n"


async def test_post_body_streams_to_backend_and_big_response_streams_back(
    bus: Bus, start_balancer: StartBalancer
) -> None:
    """A 3 MB upload reaches the backend whole, and a 5 MB chunked response arrives whole."""
    async with H1Backend() as backend, start_balancer() as balancer:
        await announce(bus, balancer, "vm-a", backend.address)
        async with h3_client(balancer.port) as client:
            upload = await client.request("POST", "/upload", body=b"y" * 3_000_000)
            download = await client.get("/big?bytes=5000000")
    assert upload.status == 200 and upload.text == "received 3000000 bytes\n"
    assert download.status == 200 and len(download.body) == 5_000_000


async def test_client_cancelling_a_download_frees_the_request(bus: Bus, start_balancer: StartBalancer) -> None:
    """A client that stops a large download mid-way ends that request; the connection keeps working."""
    async with H1Backend() as backend, start_balancer() as balancer:
        await announce(bus, balancer, "vm-a", backend.address)
        vm = balancer.router.table.get("vm-a")
        async with h3_client(balancer.port) as client:
            download = asyncio.create_task(client.get("/big?bytes=200000000"))
            await wait_until(lambda: vm.outstanding == 1 and client.pending, timeout=10, what="download started")
            (stream_id,) = client.pending
            client._quic.stop_stream(stream_id, 0x10C)
            client.transmit()
            await wait_until(lambda: vm.outstanding == 0, timeout=20, what="request ended")
            download.cancel()
            after = await client.get("/")
    assert after.status == 200
    assert vm.requests == 2 and vm.errors == 0



def _niquests_head_then_get(url: str) -> tuple[niquests.Response, niquests.Response]:
    with niquests.Session(disable_http1=True, disable_http2=True) as session:
        return session.head(url, verify=False, timeout=10), session.get(url, verify=False, timeout=10)


@pytest.mark.parametrize("upstream", ["http1", "http3"])
async def test_head_gets_headers_without_body(
    bus: Bus, start_balancer: StartBalancer, tmp_path: Path, upstream: str
) -> None:
    """A HEAD answers 200 with the GET's content-length and no body, over either upstream protocol."""
    async with (
        H1Backend() as h1,
        H3Backend(tmp_path, port=h1.port) as h3,
        start_balancer(upstream_protocol=upstream) as lb,
    ):
        await announce(bus, lb, "vm-a", h1.address)
        head, get = await asyncio.to_thread(_niquests_head_then_get, f"https://127.0.0.1:{lb.port}/")
    assert head.status_code == 200 and head.content in (b"", None)
    assert head.headers["content-length"] == str(len(get.content or b""))
    assert (get.text or "").strip() == f"Server Address: {h3.address if upstream == 'http3' else h1.address}"


async def test_more_requests_than_the_vms_stream_limit_all_succeed_over_http3(
    bus: Bus, start_balancer: StartBalancer, tmp_path: Path
) -> None:
    """200 GETs held open at once over one HTTP/3 upstream connection (the VM allows 128 streams) all get 200.

    The requests beyond the VM's MAX_STREAMS wait for a stream instead of failing (qh3 raises where
    aioquic would queue).
    """
    gate = asyncio.Event()
    async with H3Backend(tmp_path, gate=gate) as backend, start_balancer(upstream_protocol="http3") as lb:
        await announce(bus, lb, "vm-a", backend.address)
        async with h3_client(lb.port) as one, h3_client(lb.port) as two:
            pending = [asyncio.ensure_future(c.get("/")) for c in (one, two) for _ in range(100)]
            await wait_until(lambda: backend.held >= 100, timeout=20, what="the VM holding 100 requests")
            gate.set()
            responses = await asyncio.gather(*pending)
    assert Counter(r.status for r in responses) == {200: 200}
