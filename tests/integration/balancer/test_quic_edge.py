"""The HTTP/3 front's edge limits on each engine: QPACK bombs, rapid reset, and idle connections kept by PINGs."""

from __future__ import annotations

import asyncio

from shared.bus import Bus
from tests.integration.balancer.abuse import (
    bomb_block,
    latencies,
    median,
    open_and_reset,
    ping_until_closed,
    plant_entry,
    send_block,
)
from tests.integration.balancer.h3client import h3_client
from tests.integration.balancer.harness import StartBalancer, announce
from tests.integration.chaos.probe import rss_mib
from tests.support import wait_until
from tests.support.h1server import H1Backend

HEADER_LIMIT = 16_384
BOMBS = 20


async def test_a_qpack_bomb_is_refused_undecoded_and_other_clients_keep_their_latency(
    bus: Bus, start_balancer: StartBalancer
) -> None:
    """A field section naming one 3,000-byte table entry 16,000 times (48 MB decoded) and one over the limit
    encoded are both answered 431 without being decoded: RSS stays flat and another client's GETs stay fast."""
    async with H1Backend() as backend, start_balancer(listen_max_header_bytes=HEADER_LIMIT) as lb:
        await announce(bus, lb, "vm-a", backend.address)
        async with h3_client(lb.port) as good, h3_client(lb.port) as bad:
            before = await latencies(good, 30)
            plant_entry(bad, 3000)
            rss_before = rss_mib()
            bombs = [send_block(bad, bomb_block(16_000)) for _ in range(BOMBS)]
            bombs.append(send_block(bad, bomb_block(HEADER_LIMIT + 100)))
            answered, during = await asyncio.gather(asyncio.gather(*bombs), latencies(good, 30))
            growth = rss_mib() - rss_before
            after = await good.get("/")
    assert [r.status for r in answered] == [431] * (BOMBS + 1)
    assert growth < 4, f"RSS grew {growth:.1f} MiB"
    assert median(during) < 10 * median(before) + 0.005, (median(before), median(during))
    assert after.status == 200 and backend.requests == 61


async def test_rapid_reset_closes_the_connection_with_excessive_load_and_spares_others(
    bus: Bus, start_balancer: StartBalancer
) -> None:
    """A client that opens and resets more streams a second than listen_max_resets_per_s is closed with
    H3_EXCESSIVE_LOAD (after a GOAWAY); another client's requests are answered throughout."""
    async with H1Backend() as backend, start_balancer(listen_max_resets_per_s=20) as lb:
        await announce(bus, lb, "vm-a", backend.address)
        async with h3_client(lb.port) as good, h3_client(lb.port) as bad:
            open_and_reset(bad, 10)
            served = await latencies(good, 5)
            assert not bad.terminated.is_set(), "within its budget the client keeps its connection"
            open_and_reset(bad, 60)
            await asyncio.wait_for(bad.terminated.wait(), 10)
            more = await latencies(good, 5)
    assert bad.close_code == 0x107
    assert bad.goaway is not None
    assert len(served) == len(more) == 5


async def test_an_idle_connection_kept_alive_by_pings_gets_goaway_and_is_closed(start_balancer: StartBalancer) -> None:
    """With listen_http_idle_timeout_s=1, a connection that sends no request but PINGs every 0.2 s (which keep
    QUIC's own idle timeout away) gets GOAWAY and is closed with H3_NO_ERROR within a few seconds."""
    async with start_balancer(listen_http_idle_timeout_s=1.0) as lb, h3_client(lb.port) as idle:
        took = await ping_until_closed(idle, every_s=0.2, within_s=10)
        server = lb.server
        assert server is not None
        await wait_until(lambda: server.connections == 0, timeout=10, what="the idle connection's ticket back")
    assert idle.goaway == 0 and idle.close_code == 0x100
    assert 0.9 < took < 5

