"""The load loops against fake connections: the in-flight cap, the closed loop's concurrency, failure kinds."""

from __future__ import annotations

import asyncio

from ops.cli.load import Getter, LoadRun
from ops.cli.loadcore import Plan, Reply, parse_target

TARGET = parse_target("https://127.0.0.1:8443/")


class FakeClient:
    """A connection that answers 200 at the next turn of the loop, or never (`hang`); it counts what is in flight."""

    def __init__(self, hang: bool = False) -> None:
        self.hang = hang
        self.in_flight = 0
        self.most_in_flight = 0
        self.paths: list[str] = []

    async def get(self, authority: str, path: str) -> Reply:
        self.paths.append(path)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await (asyncio.Event().wait() if self.hang else asyncio.sleep(0))
            return Reply(200, {"x-quicfleet-backend": "vm-a"}, "Server Address: 10.0.0.1:443\n")
        finally:
            self.in_flight -= 1


class FakeConnections:
    """Hands out one fake client, or fails as a balancer that cannot be reached does."""

    def __init__(self, client: FakeClient | None) -> None:
        self.client = client

    async def next(self) -> Getter:
        if self.client is None:
            raise ConnectionError("no QUIC handshake within 5 s")
        return self.client


def quiet(_line: str) -> None:
    """The live line goes nowhere in these tests."""


async def test_open_loop_drops_what_falls_due_past_the_in_flight_cap() -> None:
    """With a balancer that never answers, 3 requests wait (then time out) and the other 7 are dropped, not queued."""
    client = FakeClient(hang=True)
    plan = Plan(TARGET, duration_s=0.05, rate=200, max_in_flight=3, timeout_s=0.5)
    summary = await LoadRun(plan, FakeConnections(client)).execute(quiet)
    assert (summary.requests, summary.errors["timeout"], summary.errors["dropped"]) == (10, 3, 7)
    assert client.most_in_flight == 3 and client.in_flight == 0


async def test_closed_loop_keeps_the_concurrency_in_flight() -> None:
    """`--concurrency 4` has exactly four requests waiting at once, each sent as soon as one ends."""
    client = FakeClient()
    plan = Plan(TARGET, duration_s=0.05, concurrency=4)
    summary = await LoadRun(plan, FakeConnections(client)).execute(quiet)
    assert client.most_in_flight == 4
    assert summary.requests == summary.ok == len(client.paths) > 4
    assert [(b.name, b.address) for b in summary.backends] == [("vm-a", "10.0.0.1:443")]


async def test_requests_without_a_connection_count_as_connection_errors() -> None:
    """When no connection can be had, every scheduled request fails as `connection` and none is lost."""
    plan = Plan(TARGET, duration_s=0.05, rate=100)
    summary = await LoadRun(plan, FakeConnections(None)).execute(quiet)
    assert summary.requests == summary.failed == summary.errors["connection"] == 5
