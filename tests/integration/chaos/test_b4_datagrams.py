"""B4: malformed QUIC datagrams at the balancer while a steady HTTP/3 load runs through it."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from pathlib import Path

import pytest

from services.balancer.service import BalancerService
from shared.bus import Bus
from tests.integration.balancer.harness import StartBalancer, announce
from tests.integration.chaos.datagrams import Garbage, retry_token
from tests.integration.chaos.probe import rss_mib
from tests.integration.chaos.steady import TimedLoad, quantile, steady
from tests.support import chaos
from tests.support.h3server import H3Backend

pytestmark = pytest.mark.chaos

DATAGRAMS, SECONDS = (50_000, 60.0) if chaos.long_variants() else (5_000, 5.0)
BATCH = 50


class ConnectionPeak:
    """The most client connections (and half-open handshakes) the balancer held while sampled."""

    def __init__(self, lb: BalancerService) -> None:
        self.lb, self.connections, self.half_open = lb, 0, 0

    def sample(self) -> None:
        server = self.lb.server
        assert server is not None
        self.connections = max(self.connections, len(server.connections_open()), server.connections)
        self.half_open = max(self.half_open, server.half_open)


async def _flood(port: int, garbage: Garbage, peak: ConnectionPeak) -> float:
    """Send DATAGRAMS datagrams spread over SECONDS; returns how long it took."""
    started = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for i in range(0, DATAGRAMS, BATCH):
            for j in range(i, min(i + BATCH, DATAGRAMS)):
                with contextlib.suppress(BlockingIOError):  # our send buffer is full: lost, as on a real link
                    sock.sendto(garbage.make(j), ("127.0.0.1", port))
            peak.sample()
            await asyncio.sleep(max(0.0, started + SECONDS * (i + BATCH) / DATAGRAMS - time.monotonic()))
    return time.monotonic() - started


def _phase(load: TimedLoad, start: tuple[int, int], end: tuple[int, int]) -> tuple[list[float], list[str]]:
    return load.latencies[start[0]:end[0]], load.failed[start[1]:end[1]]


async def test_malformed_datagrams_create_no_state_and_disturb_no_request(
    bus: Bus, start_balancer: StartBalancer, tmp_path: Path
) -> None:
    """With Retry on, thousands of malformed datagrams make no connection, crash nothing and fail no request."""
    settings = {"upstream_protocol": "http3", "quic_retry": "always"}
    async with H3Backend(tmp_path) as backend, start_balancer(**settings) as lb:
        await announce(bus, lb, "vm-a", backend.address)
        async with steady(lb.port) as load:
            token = await asyncio.to_thread(retry_token, lb.port)
            garbage = Garbage(lb.port, token, random.Random(4))
            peak = ConnectionPeak(lb)
            peak.sample()
            baseline, handshakes = peak.connections, lb.router.telemetry.handshakes
            rss_before, start = rss_mib(), load.mark()
            took = await _flood(lb.port, garbage, peak)
            during = load.mark()
            await _more_successes(load, 50)
            latencies, failures = _phase(load, start, load.mark())
            growth = rss_mib() - rss_before
            new_handshakes = lb.router.telemetry.handshakes - handshakes
        assert lb.server is not None and not lb.server._transport.is_closing()
    assert failures == [] and load.failed == []
    assert during[0] > start[0], "the load was served during the flood"
    assert peak.connections <= baseline and peak.half_open == 0 and new_handshakes == 0
    assert growth < chaos.RSS_GROWTH_LIMIT_MIB
    chaos.record(chaos.Row(
        scenario="B4", title="malformed QUIC datagrams", load="2 HTTP/3 clients via balancer to an HTTP/3 backend",
        inputs=DATAGRAMS, invariants={"I2": "pass", "I4": "pass"},
        figures=f"{DATAGRAMS} datagrams in {took:.1f} s ({', '.join(f'{k} {n}' for k, n in garbage.sent.items())}); "
                f"{len(latencies)} GETs 0 errors, p99 {quantile(latencies, 0.99) * 1000:.1f} ms; connections "
                f"peak {peak.connections} (load's {baseline}), half-open 0; RSS {growth:+.1f} MiB",
    ))


async def _more_successes(load: TimedLoad, count: int, timeout: float = 20.0) -> None:
    """Wait until `count` more requests succeeded (the balancer still serves after the flood)."""
    target, deadline = len(load.latencies) + count, time.monotonic() + timeout
    while len(load.latencies) < target and not load.failed:
        assert time.monotonic() < deadline, "the load stalled after the flood"
        await asyncio.sleep(0.01)
