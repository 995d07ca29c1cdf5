"""Request-body backpressure: a fast uploader to a slow VM is held by QUIC credit, not buffered."""

from __future__ import annotations

import asyncio
from typing import Any

from services.balancer.proxy.exchange import OVERFLOW_FACTOR
from shared.bus import Bus
from tests.integration.balancer.h3client import h3_client
from tests.integration.balancer.harness import StartBalancer, announce
from tests.support import wait_until
from tests.support.h1server import H1Backend

WINDOW = 256 * 1024
BODY = 8 * 1024 * 1024
SLACK = 16 * 1024
"""HTTP/1.1 chunk framing and header bytes on top of the body window."""


def _flow_blocked(client: Any) -> bool:
    """Whether the test client's upload stream has used all the credit the balancer gave it."""
    streams = [s for s in client._quic._streams.values() if s.stream_id % 4 == 0 and s.max_stream_data_remote]
    return any(s.sender.next_offset >= s.max_stream_data_remote for s in streams)


async def test_upload_to_stalled_backend_stays_within_the_window(
    bus: Bus, start_balancer: StartBalancer, quic_engine: str
) -> None:
    """An 8 MiB POST to a VM that stopped reading blocks the client at the window, then completes; on qh3
    (whose core grants credit itself) the buffer stays under the hard bound and a body past it is refused 503."""
    async with H1Backend(rcvbuf=65_536) as slow, start_balancer(listen_max_request_buffer_bytes=WINDOW) as lb:
        router = lb.router
        assert router is not None
        await announce(bus, lb, "vm-slow", slow.address)
        slow.stalled = True
        async with h3_client(lb.port) as client:
            post = asyncio.create_task(client.request("POST", "/upload", body=b"x" * BODY))
            await wait_until(lambda: _flow_blocked(client), timeout=30, what="client blocked by stream credit")
            held = router.peak_body_buffered
            slow.unstall()
            response = await asyncio.wait_for(post, 30)
    if quic_engine == "qh3":
        bound = OVERFLOW_FACTOR * WINDOW + SLACK
        assert 0 < held <= bound and router.peak_body_buffered <= bound
        assert response.status in (200, 503)
        if response.status == 200:
            assert response.text == f"received {BODY} bytes\n"
        return
    assert 0 < held <= WINDOW + SLACK
    assert router.peak_body_buffered <= WINDOW + SLACK
    assert response.status == 200 and response.text == f"received {BODY} bytes\n"


async def test_upload_to_fast_backend_passes_whole(bus: Bus, start_balancer: StartBalancer) -> None:
    """With a small window, a large POST to a reading VM still arrives complete."""
    async with H1Backend() as fast, start_balancer(listen_max_request_buffer_bytes=65_536) as lb:
        await announce(bus, lb, "vm-fast", fast.address)
        async with h3_client(lb.port) as client:
            response = await client.request("POST", "/upload", body=b"y" * (2 * 1024 * 1024))
    assert response.status == 200 and response.text == "received 2097152 bytes\n"
