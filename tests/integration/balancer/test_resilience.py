"""Failover, ejection, drains, hostile input and reports, against real backends and a real nats-server."""

from __future__ import annotations

import asyncio
import os
import random
import socket
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from shared.bus import Bus
from shared.contract.draining import BackendDrained
from shared.contract.events import VmState, VmStateChanged
from shared.contract.load import BalancerReported
from shared.contract.provisioning import VmList, VmRecord
from shared.endpoints import ok_reply
from tests.integration.balancer.h3client import Response, h3_client
from tests.integration.balancer.harness import StartBalancer, announce
from tests.support import Collector, wait_until
from tests.support.h1server import H1Backend
from tests.support.h3server import H3Backend


async def _collect(bus: Bus, subject: str, model: type) -> Collector:
    """A Collector of validated messages on `subject`."""
    collector = Collector()

    async def on_message(event: object, _msg: object) -> None:
        await collector(event)

    await bus.subscribe(subject, model, on_message)
    return collector


async def _load(client: object, path: str, total: int, concurrency: int) -> list[Response]:
    """Send `total` GETs with at most `concurrency` in flight."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> Response:
        async with gate:
            return await client.get(path)  # type: ignore[attr-defined, no-any-return]

    return await asyncio.gather(*(one() for _ in range(total)))


async def test_killed_backend_under_load_fails_over_and_is_ejected(bus: Bus, start_balancer: StartBalancer) -> None:
    """Killing one of three HTTP/1.1 backends mid-load fails no GET, and the dead one is ejected."""
    async with H1Backend() as a, H1Backend() as b, H1Backend() as c, start_balancer() as lb:
        for name, backend in (("vm-a", a), ("vm-b", b), ("vm-c", c)):
            await announce(bus, lb, name, backend.address)
        async with h3_client(lb.port) as client:
            load = asyncio.create_task(_load(client, "/slow?ms=5", 400, 12))
            await wait_until(lambda: b.served("/slow") >= 20, timeout=30, what="load reaching vm-b")
            await b.stop()
            responses = await load
        dead = lb.router.table.get("vm-b")
        assert dead is not None and dead.health.ejections >= 1
    assert [r.status for r in responses] == [200] * 400
    assert {r.headers[b"x-quicfleet-backend"] for r in responses[-50:]} <= {b"vm-a", b"vm-c"}


async def test_killed_http3_backend_fails_over(bus: Bus, start_balancer: StartBalancer, tmp_path: Path) -> None:
    """With HTTP/3 upstream, GETs keep succeeding after one of two aioquic backends stops."""
    async with H3Backend(tmp_path) as a, H3Backend(tmp_path) as b, start_balancer(upstream_protocol="http3") as lb:
        await announce(bus, lb, "vm-a", a.address)
        await announce(bus, lb, "vm-b", b.address)
        async with h3_client(lb.port) as client:
            first = await _load(client, "/", 40, 8)
            await b.stop()
            after = await _load(client, "/", 60, 8)
    assert {r.status for r in first + after} == {200}
    assert {r.text.strip() for r in after[-20:]} == {f"Server Address: {a.address}"}


async def test_drain_under_load_fails_nothing_and_reports_drained(bus: Bus, start_balancer: StartBalancer) -> None:
    """A draining event stops new requests to the VM, lets slow in-flight ones finish, then says BackendDrained."""
    drained = await _collect(bus, bus.subjects.balancer_drained, BackendDrained)
    async with H1Backend() as a, H1Backend() as b, start_balancer() as lb:
        await announce(bus, lb, "vm-a", a.address)
        await announce(bus, lb, "vm-b", b.address)
        async with h3_client(lb.port) as client:
            load = asyncio.create_task(_load(client, "/slow?ms=200", 80, 16))
            await wait_until(lambda: lb.router.table.get("vm-a").outstanding > 0, timeout=20, what="vm-a busy")
            draining = VmStateChanged(vm="vm-a", state=VmState.DRAINING, address=a.address, deadline_s=30,
                                      request_id="d-1")
            await bus.publish(bus.subjects.vm(VmState.DRAINING), draining)
            await wait_until(lambda: lb.router.table.get("vm-a").draining, timeout=10, what="drain applied")
            served_at_drain = a.served("/slow") + lb.router.table.get("vm-a").outstanding
            event = await drained.wait_for(lambda m: True, timeout=30)
            responses = await load
    assert (event.vm, event.timed_out, event.request_id, event.balancer) == ("vm-a", False, "d-1", lb.balancer_id)
    assert [r.status for r in responses] == [200] * 80
    assert a.served("/slow") <= served_at_drain


async def test_draining_event_deadline_bounds_the_drain(bus: Bus, start_balancer: StartBalancer) -> None:
    """A draining event's `deadline_s` ends the drain (timed out) while a slow request is still in flight."""
    drained = await _collect(bus, bus.subjects.balancer_drained, BackendDrained)
    async with H1Backend() as a, start_balancer() as lb:
        await announce(bus, lb, "vm-a", a.address)
        async with h3_client(lb.port) as client:
            slow = asyncio.create_task(client.get("/slow?ms=3000"))
            await wait_until(lambda: lb.router.table.get("vm-a").outstanding > 0, timeout=20, what="vm-a busy")
            started = asyncio.get_running_loop().time()
            draining = VmStateChanged(vm="vm-a", state=VmState.DRAINING, address=a.address, deadline_s=0.3)
            await bus.publish(bus.subjects.vm(VmState.DRAINING), draining)
            event = await drained.wait_for(lambda m: True, timeout=10)
            took = asyncio.get_running_loop().time() - started
            await slow
    assert (event.vm, event.timed_out) == ("vm-a", True)
    assert took < 2.5, f"the drain lasted {took:.1f} s, not the event's 0.3 s"


async def test_draining_event_then_destroyed_removes_backend(bus: Bus, start_balancer: StartBalancer) -> None:
    """`fleet.vm.draining` stops routing to a VM and `fleet.vm.destroyed` forgets it."""
    async with H1Backend() as a, H1Backend() as b, start_balancer() as lb:
        await announce(bus, lb, "vm-a", a.address)
        await announce(bus, lb, "vm-b", b.address)
        await announce(bus, lb, "vm-a", a.address, VmState.DRAINING)
        async with h3_client(lb.port) as client:
            responses = await _load(client, "/", 20, 4)
        await announce(bus, lb, "vm-a", a.address, VmState.DESTROYED)
    assert {r.headers[b"x-quicfleet-backend"] for r in responses} == {b"vm-b"}


async def test_garbage_datagrams_and_huge_headers_do_not_disturb_other_clients(
    bus: Bus, start_balancer: StartBalancer
) -> None:
    """Random UDP datagrams and a request with oversized headers (431) leave another client's GETs unharmed."""
    async with H1Backend() as a, start_balancer() as lb:
        await announce(bus, lb, "vm-a", a.address)
        noise = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rng = random.Random(11)
        async with h3_client(lb.port) as good, h3_client(lb.port) as bad:
            load = asyncio.create_task(_load(good, "/", 100, 4))
            for i in range(300):
                size = rng.choice([1, 20, 1200, 1350, 1500])
                head = bytes([0xC0 | rng.randrange(16)]) if i % 2 else b""
                noise.sendto(head + os.urandom(size), ("127.0.0.1", lb.port))
                if i % 50 == 0:
                    await asyncio.sleep(0)
            huge = await bad.get("/", [(b"x-big", b"z" * 40_000)])
            responses = await load
        noise.close()
    assert huge.status == 431
    assert [r.status for r in responses] == [200] * 100


async def test_report_counts_the_requests_sent(bus: Bus, start_balancer: StartBalancer) -> None:
    """A load report on NATS carries this balancer's id, address and per-VM request counts."""
    reports = await _collect(bus, bus.subjects.balancer_report, BalancerReported)
    async with H1Backend() as a, start_balancer(advertise_address="203.0.113.9:443") as lb:
        await announce(bus, lb, "vm-a", a.address)
        async with h3_client(lb.port) as client:
            responses = await _load(client, "/", 25, 5)

        def counted(report: BalancerReported) -> bool:
            return report.balancer == lb.balancer_id and any(v.requests == 25 for v in report.backends)

        report = await reports.wait_for(counted, timeout=20)
    (load,) = report.backends
    assert {r.status for r in responses} == {200}
    assert (report.address, load.vm, load.errors, load.outstanding) == ("203.0.113.9:443", "vm-a", 0, 0)
    assert sum(load.latency.counts) == 25


async def test_restarted_balancer_learns_fleet_from_provisioners(bus: Bus, start_balancer: StartBalancer) -> None:
    """At start the balancer asks `fleet.prov.list` and serves the listed ready VMs at once."""
    async with H1Backend() as a:
        listing = VmList(host="hv1", vms=[VmRecord(vm="vm-a", state=VmState.READY, address=a.address,
                                                   since="2026-01-01T00:00:00Z")])

        async def answer(msg: Msg) -> None:
            await msg.respond(ok_reply(listing))

        await bus.nc.subscribe(bus.subjects.prov_list, cb=answer)
        async with start_balancer() as lb, h3_client(lb.port) as client:
            response = await client.get("/")
    assert response.status == 200 and response.headers[b"x-quicfleet-backend"] == b"vm-a"


@pytest.mark.parametrize(
    ("mode", "threshold", "retried"), [("always", 256, 1), ("threshold", 0, 1), ("threshold", 256, 0)]
)
async def test_quic_retry_policy(
    bus: Bus, start_balancer: StartBalancer, mode: str, threshold: int, retried: int
) -> None:
    """Retry is demanded always, or in threshold mode only above the half-open count; clients are served either way."""
    async with H1Backend() as a, start_balancer(quic_retry=mode, quic_retry_threshold=threshold) as lb:
        await announce(bus, lb, "vm-a", a.address)
        async with h3_client(lb.port) as client:
            response = await client.get("/")
            retries = client._quic._retry_count
    assert response.status == 200
    assert retries == retried


async def test_active_checks_take_a_dead_backend_out(bus: Bus, start_balancer: StartBalancer) -> None:
    """Health checks every 0.1 s mark a stopped backend unhealthy (fall=2) with no client traffic."""
    async with H1Backend() as a, H1Backend() as b, start_balancer(health_interval_s=0.1) as lb:
        await announce(bus, lb, "vm-a", a.address)
        await announce(bus, lb, "vm-b", b.address)
        await wait_until(lambda: b.served("/healthz") >= 1, timeout=10, what="a health check")
        await b.stop()
        await wait_until(lambda: not lb.router.table.get("vm-b").health.healthy, timeout=10, what="vm-b unhealthy")
        assert lb.router.table.get("vm-a").health.healthy


async def test_a_client_leaving_with_requests_in_flight_does_not_count_against_the_vm(
    bus: Bus, start_balancer: StartBalancer
) -> None:
    """Responses that arrive for a client gone mid-request are dropped quietly: the VM is not ejected."""
    async with H1Backend() as a, start_balancer() as lb:
        await announce(bus, lb, "vm-a", a.address)
        async with h3_client(lb.port) as leaving:
            pending = [asyncio.ensure_future(leaving.get("/slow?ms=20")) for _ in range(100)]
            await wait_until(lambda: a.requests >= 20, timeout=10, what="the VM taking requests")
            leaving.close()  # its CONNECTION_CLOSE arrives while the answers are still coming
        await asyncio.gather(*pending, return_exceptions=True)
        await wait_until(lambda: lb.router.in_flight() == 0, timeout=10, what="the abandoned requests to end")
        backend = lb.router.table.get("vm-a")
        assert backend is not None and backend.health.ejections == 0
        async with h3_client(lb.port) as staying:
            response = await staying.get("/")
    assert response.status == 200
