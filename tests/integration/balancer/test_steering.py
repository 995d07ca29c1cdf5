"""Balancers sharing one UDP port keep every QUIC connection through added, removed and draining
processes and through client source-port changes: connection-ID steering and GOAWAY drains."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from services.balancer.service import BalancerService
from services.balancer.steering.cid import Layout
from shared.bus import Bus
from tests.integration.balancer.h3client import Response, _Client, h3_client
from tests.integration.balancer.harness import StartBalancer, announce, list_as_provisioner
from tests.integration.balancer.load import Load
from tests.support import wait_until
from tests.support.h1server import H1Backend

CLIENTS = 16


@asynccontextmanager
async def clients(port: int, count: int = CLIENTS) -> AsyncIterator[list[_Client]]:
    """`count` HTTP/3 connections to the shared port (each from its own source port)."""
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(h3_client(port)) for _ in range(count)]


async def get_all(connections: list[_Client], path: str = "/") -> list[Response]:
    """One GET on every connection, with a deadline far below the 60 s idle timeout."""
    return await asyncio.gather(*(asyncio.wait_for(c.get(path), 5) for c in connections))


def owners(connections: list[_Client], *balancers: BalancerService) -> list[int]:
    """The slot each connection's current destination ID names (which process owns it)."""
    slot = Layout().owner
    return [slot(c._quic._peer_cid.cid) or -1 for c in connections]


@asynccontextmanager
async def two_processes(
    bus: Bus, start_balancer: StartBalancer
) -> AsyncIterator[tuple[BalancerService, BalancerService, H1Backend]]:
    """Two balancers on one port, both routing to one backend."""
    async with H1Backend() as backend, start_balancer() as first, start_balancer(listen_port=first.port) as second:
        for balancer in (first, second):
            await announce(bus, balancer, "vm-a", backend.address)
        yield first, second, backend


async def all_ok(connections: list[_Client]) -> bool:
    return {r.status for r in await get_all(connections)} == {200}


def forwarded(*balancers: BalancerService) -> int:
    return sum(b.server.steering.counts.forwarded for b in balancers if b.server.steering is not None)


async def test_connections_survive_source_port_changes(bus: Bus, start_balancer: StartBalancer) -> None:
    """Through two processes on one port, every client that changes its source port keeps its connection."""
    async with two_processes(bus, start_balancer) as (first, second, _), clients(first.port) as connections:
        assert await all_ok(connections)
        assert len(set(owners(connections))) == 2, "the kernel spread connections over both processes"
        for connection in connections:
            await connection.rebind()
        assert await all_ok(connections)
        assert forwarded(first, second) > 0, "some moved clients landed on the other process"


async def test_adding_and_removing_a_process_keeps_every_connection(bus: Bus, start_balancer: StartBalancer) -> None:
    """A third process joining the port and then draining away costs no connection of the other two."""
    async with two_processes(bus, start_balancer) as (first, _, backend), clients(first.port) as connections:
        assert await all_ok(connections)
        async with start_balancer(listen_port=first.port) as third:
            await announce(bus, third, "vm-a", backend.address)
            assert await all_ok(connections)
        assert await all_ok(connections)
        assert all(c.goaway is None for c in connections), "none of these belonged to the third"


async def test_draining_process_sends_goaway_then_closes_cleanly(bus: Bus, start_balancer: StartBalancer) -> None:
    """Stopping one of two processes sends GOAWAY to its clients before a no-error close; the other's clients
    keep working and new connections land on the survivor."""
    async with H1Backend() as backend, start_balancer() as survivor:
        await announce(bus, survivor, "vm-a", backend.address)
        async with AsyncExitStack() as stack:
            leaving = await stack.enter_async_context(start_balancer(listen_port=survivor.port))
            await announce(bus, leaving, "vm-a", backend.address)
            async with clients(survivor.port) as connections:
                assert {r.status for r in await get_all(connections)} == {200}
                theirs = [c for c, o in zip(connections, owners(connections), strict=True)
                          if o == leaving.server.steering.slot]
                ours = [c for c in connections if c not in theirs]
                assert theirs and ours
                in_flight = asyncio.gather(*(c.get("/slow?ms=300") for c in theirs))
                await wait_until(lambda: leaving.router is not None and leaving.router.in_flight() == len(theirs),
                                 what="slow requests in flight on the leaving process")
                await stack.aclose()
                assert {r.status for r in await in_flight} == {200}, "requests in flight at the drain finished"
                for connection in theirs:
                    await asyncio.wait_for(connection.terminated.wait(), 5)
                    assert connection.goaway is not None and connection.close_code == 0x100
                assert {r.status for r in await get_all(ours)} == {200}
                async with clients(survivor.port, 4) as fresh:
                    assert {r.status for r in await get_all(fresh)} == {200}


async def test_rolling_restart_under_load_fails_no_request(bus: Bus, start_balancer: StartBalancer) -> None:
    """Replacing each of two processes in turn (new one up, old one drained) under steady load fails no
    request: clients move to a new connection on GOAWAY."""
    async with H1Backend() as backend:
        await list_as_provisioner(bus, "vm-a", backend.address)
        procs = [await Proc.start(start_balancer, bus, backend, 0)]
        port = procs[0].service.port
        procs.append(await Proc.start(start_balancer, bus, backend, port))
        load = Load(port)
        runners = [asyncio.create_task(load.run()) for _ in range(8)]
        await wait_until(lambda: load.ok >= 50, what="load running")
        for _ in range(2):
            procs.append(await Proc.start(start_balancer, bus, backend, port))
            before = load.ok
            await procs.pop(0).stop()
            await wait_until(lambda b=before: load.ok >= b + 50, what="load after a restart")  # type: ignore[misc]
        load.stop = True
        await asyncio.gather(*runners)
        for proc in procs:
            await proc.stop()
    assert load.failed == [], load.failed[:5]
    assert load.moved > 0, "some clients were told to go away"


class Proc:
    """One balancer process on the shared port, stopped on its own (SIGTERM's drain path)."""

    def __init__(self, service: BalancerService, stack: AsyncExitStack) -> None:
        self.service, self.stack = service, stack

    @classmethod
    async def start(cls, start_balancer: StartBalancer, bus: Bus, backend: H1Backend, port: int) -> Proc:
        stack = AsyncExitStack()
        service = await stack.enter_async_context(start_balancer(listen_port=port))
        await announce(bus, service, "vm-a", backend.address)
        return cls(service, stack)

    async def stop(self) -> None:
        await self.stack.aclose()
