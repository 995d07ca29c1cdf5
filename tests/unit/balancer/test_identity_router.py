"""Identity checks in the glue, with in-memory fakes: proxied responses, check results, report and metrics."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

from prometheus_client import generate_latest
from structlog.testing import capture_logs

from services.balancer.core.backends import Backend, BackendTable
from services.balancer.core.headers import Headers, forwarding
from services.balancer.core.health import HealthPolicy
from services.balancer.core.options import ProxyOptions
from services.balancer.core.policy import Picker
from services.balancer.core.reporting import build_report
from services.balancer.core.retry import RetryBudget
from services.balancer.core.upstream import UpstreamRequest
from services.balancer.process.telemetry import Telemetry, make_registry
from services.balancer.proxy.exchange import Exchange
from services.balancer.proxy.ids import new_request_id
from services.balancer.proxy.router import Router
from services.balancer.upstream.checks import record
from tests.support.balancer_fakes import FakeClient, FakeUpstream

ID = new_request_id()

UUIDS = {"vm-a": "6f1c1a52-3c57-4d0e-9a51-0c2b8f1d7e01", "vm-b": "0b9d8e7f-1111-4222-8333-944455556666"}


class Rig:
    """A router over VMs that must prove their identity (already verified), and a client to send requests."""

    def __init__(self, vms: list[str], rise: int = 2) -> None:
        self.upstreams = {vm: FakeUpstream() for vm in vms}
        table = BackendTable(HealthPolicy(rise=rise))
        for n, vm in enumerate(vms):
            table.ready(vm, f"127.0.0.1:{9000 + n}", now=0.0, identity=UUIDS[vm]).verification.confirmed()
        self.telemetry = Telemetry()
        self.router = Router(
            table,
            Picker("round_robin", rng=random.Random()),
            RetryBudget(ratio=1.0),
            lambda b: self.upstreams[b.vm],
            ProxyOptions(),
            lambda _over: None,
            self.telemetry,
        )
        self.client = FakeClient()
        self.streams = 0

    def backend(self, vm: str) -> Backend:
        backend = self.router.table.get(vm)
        assert backend is not None
        return backend

    def send(self, method: bytes = b"GET", has_body: bool = False) -> Exchange:
        headers = forwarding([(b"accept", b"*/*")], "192.0.2.7", b"example.org", b"3 lb", fresh_id=ID)
        request = UpstreamRequest(method, b"/", b"example.org", headers, has_body)
        exchange = Exchange(self.client, self.streams, request, "192.0.2.7", self.router)
        self.streams += 4
        exchange.start()
        return exchange

    def answer(self, vm: str, seen: bytes | None, body: bytes) -> None:
        """The newest call to `vm` answers 200 with `body`, carrying `seen` as its identity header."""
        headers: Headers = [(b"content-length", str(len(body)).encode())]
        if seen is not None:
            headers.append((b"x-quicfleet-vm", seen))
        self.upstreams[vm].calls[-1].answer(200, headers, body)


async def test_a_response_with_the_right_uuid_reaches_the_client_with_the_header() -> None:
    """A verified VM's response is forwarded, its x-quicfleet-vm header passed through unchanged."""
    rig = Rig(["vm-a"])
    exchange = rig.send()
    rig.answer("vm-a", UUIDS["vm-a"].encode(), b"honest")
    assert exchange.status == 200 and rig.client.data[exchange.stream_id] == b"honest"
    assert (b"x-quicfleet-vm", UUIDS["vm-a"].encode()) in rig.client.headers[exchange.stream_id]


async def test_a_get_answered_as_another_vm_is_retried_and_the_impostor_never_reaches_the_client() -> None:
    """A GET whose response carries another UUID is dropped, retried on the next VM, and that VM's answer is sent."""
    rig = Rig(["vm-a", "vm-b"])
    with capture_logs() as logs:
        exchange = rig.send()
        assert exchange.vm == "vm-a"
        rig.answer("vm-a", UUIDS["vm-b"].encode(), b"impostor")
        assert exchange.vm == "vm-b"
        rig.answer("vm-b", UUIDS["vm-b"].encode(), b"honest")
    assert rig.client.data[exchange.stream_id] == b"honest"
    assert rig.client.headers[exchange.stream_id][0] == (b":status", b"200")
    assert not rig.backend("vm-a").routable(0.0)
    assert rig.telemetry.identity_mismatches == {"vm-a": 1} and rig.telemetry.retries == 1
    (line,) = [e for e in logs if e["event"] == "backend.identity_mismatch"]
    assert line["vm"] == "vm-a" and line["address"] == "127.0.0.1:9000" and line["log_level"] == "warning"
    assert line["expected"] == UUIDS["vm-a"] and line["seen"] == UUIDS["vm-b"]
    assert {rig.send().vm for _ in range(3)} == {"vm-b"}


async def test_a_post_answered_without_uuid_gets_502_and_no_byte_of_the_impostor() -> None:
    """A request that may not be retried gets the balancer's 502 when the response has no identity header."""
    rig = Rig(["vm-a", "vm-b"])
    exchange = rig.send(b"POST", has_body=True)
    rig.answer("vm-a", None, b"impostor")
    assert exchange.status == 502 and exchange.finished
    assert b"impostor" not in rig.client.data[exchange.stream_id]
    assert rig.backend("vm-a").verification.reason == "address answered as another VM (no x-quicfleet-vm header)"


async def test_a_mismatch_aborts_the_other_requests_in_flight_to_that_vm() -> None:
    """When one response shows another machine at the address, the VM's other in-flight GETs move on at once."""
    rig = Rig(["vm-a", "vm-b"])
    first, _, third = rig.send(), rig.send(), rig.send()
    assert (first.vm, third.vm) == ("vm-a", "vm-a")
    rig.upstreams["vm-a"].calls[0].sink.on_headers(200, [(b"x-quicfleet-vm", b"someone-else")])
    assert first.vm == third.vm == "vm-b"
    assert rig.router.in_flight_by.get(rig.backend("vm-a")) is None


async def test_an_active_check_seeing_another_uuid_takes_the_vm_out_whatever_its_status() -> None:
    """A 200 check answer with the wrong UUID fails at once (no fall streak) and leaves health untouched."""
    rig = Rig(["vm-a"])
    backend = rig.backend("vm-a")
    record(rig.router, backend, 200, b"someone-else")
    assert not backend.routable(0.0) and backend.health.healthy
    assert rig.telemetry.identity_mismatches == {"vm-a": 1}


async def test_rise_checks_with_the_right_uuid_bring_a_mismatched_vm_back() -> None:
    """After a mismatch the VM returns only once `rise` checks in a row saw its UUID."""
    rig = Rig(["vm-a"], rise=2)
    backend = rig.backend("vm-a")
    record(rig.router, backend, 200, None)
    with capture_logs() as logs:
        record(rig.router, backend, 200, UUIDS["vm-a"].encode())
        assert not backend.routable(0.0)
        record(rig.router, backend, 503, UUIDS["vm-a"].encode())
    assert backend.verification.trusted
    assert [e["event"] for e in logs] == ["backend.identity_verified"]


async def test_a_check_without_answer_proves_nothing_about_identity() -> None:
    """A timed-out check (status 0) leaves an unverified VM unverified and feeds only the fall streak."""
    table = BackendTable(HealthPolicy(fall=1))
    backend = table.ready("vm-a", "127.0.0.1:9000", 0.0, identity=UUIDS["vm-a"])
    router = Router(
        table, Picker("round_robin", rng=random.Random()), RetryBudget(), lambda b: FakeUpstream(), ProxyOptions(),
        lambda _over: None,
    )
    record(router, backend, 0, None)
    assert backend.verification.pending and not backend.health.healthy


async def test_the_report_says_an_identity_failed_vm_is_not_routable() -> None:
    """The load report marks a mismatched VM unroutable, so the scaler's liveness rule can replace it."""
    rig = Rig(["vm-a", "vm-b"])
    record(rig.router, rig.backend("vm-a"), 200, b"someone-else")
    report = build_report(
        "lb-1", None, datetime.now(UTC), 1.0, 0, rig.router.table.backends.values(), asyncio.get_running_loop().time()
    )
    assert {b.vm: b.routable for b in report.backends} == {"vm-a": False, "vm-b": True}


async def test_mismatches_are_counted_per_vm_in_prometheus_and_forgotten_with_the_vm() -> None:
    """`quicfleet_balancer_identity_mismatches_total` counts every wrong answer by VM; removing the VM drops it."""
    rig = Rig(["vm-a"])
    for _ in range(3):
        record(rig.router, rig.backend("vm-a"), 200, None)
    text = generate_latest(make_registry(rig.telemetry)).decode()
    assert 'quicfleet_balancer_identity_mismatches_total{vm="vm-a"} 3.0' in text
    rig.router.remove("vm-a")
    assert rig.telemetry.identity_mismatches == {}
