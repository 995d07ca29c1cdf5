"""Router and exchanges with in-memory fakes: 5xx ejection, panic, metrics counters and the access log."""

from __future__ import annotations

import asyncio
import random

from prometheus_client import generate_latest
from structlog.testing import capture_logs

from services.balancer.core.backends import BackendTable
from services.balancer.core.headers import forwarding, request_id_of
from services.balancer.core.health import HealthPolicy
from services.balancer.core.options import ProxyOptions
from services.balancer.core.policy import Picker
from services.balancer.core.retry import RetryBudget
from services.balancer.core.upstream import CONNECT, UpstreamRequest
from services.balancer.process.telemetry import Telemetry, make_registry
from services.balancer.proxy.accesslog import AccessLog
from services.balancer.proxy.exchange import Exchange
from services.balancer.proxy.ids import new_request_id
from services.balancer.proxy.router import Router
from tests.support import wait_until
from tests.support.balancer_fakes import FakeClient, FakeUpstream


class Rig:
    """A router over named VMs with fake upstreams, and a client to send requests through it."""

    def __init__(self, vms: list[str], health: HealthPolicy, panic: float = 0.0, access: bool = False) -> None:
        self.upstreams: dict[str, FakeUpstream] = {vm: FakeUpstream() for vm in vms}
        table = BackendTable(health, panic_threshold=panic)
        for n, vm in enumerate(vms):
            table.ready(vm, f"127.0.0.1:{9000 + n}", now=0.0)
        loop = asyncio.get_running_loop()
        self.telemetry = Telemetry()
        self.access = AccessLog(loop, enabled=access)
        self.router = Router(table, Picker("round_robin", rng=random.Random()), RetryBudget(ratio=1.0),
                             lambda b: self.upstreams[b.vm], ProxyOptions(), lambda _over: None,
                             self.telemetry, self.access)
        self.client = FakeClient()
        self.streams = 0

    def send(self, method: bytes = b"GET", protocol: str = "h3") -> Exchange:
        headers = forwarding([(b"accept", b"*/*")], "192.0.2.7", b"example.org", b"3 lb", fresh_id=new_request_id())
        request = UpstreamRequest(method, b"/x?y=1", b"example.org", headers, False)
        exchange = Exchange(self.client, self.streams, request, "192.0.2.7", self.router, protocol)
        self.streams += 4
        exchange.start()
        return exchange

    def answer(self, vm: str, status: int, body: bytes = b"ok") -> None:
        call = self.upstreams[vm].calls[-1]
        call.sink.on_headers(status, [(b"content-length", str(len(body)).encode())])
        call.sink.on_data(body)
        call.sink.on_end()


async def test_consecutive_5xx_eject_a_vm_and_still_reach_the_client() -> None:
    """Two 500s in a row from a VM eject it (counted and logged); the client gets each 500 unchanged."""
    rig = Rig(["vm-a", "vm-b"], HealthPolicy(ejection_consecutive_5xx=2))
    with capture_logs() as logs:
        for _ in range(2):
            exchange = rig.send()
            assert exchange.vm == "vm-a"
            rig.answer("vm-a", 500, b"broken")
            assert rig.client.headers[exchange.stream_id][0] == (b":status", b"500")
            assert rig.client.data[exchange.stream_id] == b"broken"
            assert rig.send().vm == "vm-b"
            rig.answer("vm-b", 200)
    assert rig.telemetry.ejections == {"vm-a": 1}
    assert [e["why"] for e in logs if e["event"] == "backend.ejected"] == ["5xx"]
    assert {rig.send().vm for _ in range(4)} == {"vm-b"}


async def test_4xx_responses_do_not_eject() -> None:
    """Client errors say nothing about the VM: many 404s in a row keep it in."""
    rig = Rig(["vm-a"], HealthPolicy(ejection_consecutive_5xx=1))
    for _ in range(5):
        rig.send()
        rig.answer("vm-a", 404)
    assert rig.telemetry.ejections == {}


async def test_panic_routes_to_an_ejected_vm_and_logs_once_each_way() -> None:
    """With the only VM ejected, panic sends requests to it anyway; entering and leaving are logged once."""
    rig = Rig(["vm-a"], HealthPolicy(ejection_consecutive_5xx=1), panic=0.5)
    with capture_logs() as logs:
        rig.send()
        rig.answer("vm-a", 503)
        for _ in range(3):
            exchange = rig.send()
            assert exchange.vm == "vm-a"
            rig.answer("vm-a", 200)
        backend = rig.router.table.get("vm-a")
        assert backend is not None
        backend.health.ejected_until = 0.0
        rig.send()
    events = [e["event"] for e in logs if e["event"].startswith("balancer.panic")]
    assert events == ["balancer.panic_entered", "balancer.panic_left"]
    assert rig.telemetry.panics == 1 and not rig.router.panicking


async def test_no_panic_answers_503_when_every_vm_is_ejected() -> None:
    """Panic off: the ejected only VM gets no request, the client gets 503 from the balancer."""
    rig = Rig(["vm-a"], HealthPolicy(ejection_consecutive_5xx=1), panic=0.0)
    rig.send()
    rig.answer("vm-a", 500)
    exchange = rig.send()
    assert exchange.status == 503 and exchange.vm == "" and len(rig.upstreams["vm-a"].calls) == 1


async def test_finished_requests_are_counted_by_vm_class_and_protocol() -> None:
    """Each finished request adds to requests{vm,code_class,protocol}, response bytes and the histogram."""
    rig = Rig(["vm-a"], HealthPolicy())
    rig.send(protocol="h3")
    rig.answer("vm-a", 200, b"12345")
    rig.send(protocol="h1")
    rig.answer("vm-a", 502, b"x")
    assert rig.telemetry.requests == {("vm-a", "2xx", "h3"): 1, ("vm-a", "5xx", "h1"): 1}
    assert rig.telemetry.response_bytes == 6 and sum(rig.telemetry.latency_counts) == 2


async def test_a_retry_is_counted() -> None:
    """A GET whose first attempt fails to connect is retried on the other VM and counted once as a retry."""
    rig = Rig(["vm-a", "vm-b"], HealthPolicy())
    exchange = rig.send()
    rig.upstreams["vm-a"].calls[-1].sink.on_failed(CONNECT)
    rig.answer("vm-b", 200)
    assert rig.telemetry.retries == 1 and exchange.attempts == 2
    assert rig.telemetry.requests == {("vm-b", "2xx", "h3"): 1}


async def test_the_response_echoes_the_request_id_sent_upstream() -> None:
    """The id the backend received comes back to the client on the response."""
    rig = Rig(["vm-a"], HealthPolicy())
    exchange = rig.send()
    rig.answer("vm-a", 200)
    sent = request_id_of(exchange.request.headers)
    assert sent and (b"x-request-id", sent) in rig.client.headers[exchange.stream_id]


async def test_access_log_line_has_every_field() -> None:
    """A finished request becomes one `access` line with id, client, protocol, request, status, bytes, VM and times."""
    rig = Rig(["vm-a"], HealthPolicy(), access=True)
    with capture_logs() as logs:
        exchange = rig.send()
        rig.answer("vm-a", 201, b"hello")
        assert not [e for e in logs if e["event"] == "access"], "written later, not on the request path"
        rig.access.flush()
    (line,) = [e for e in logs if e["event"] == "access"]
    assert line["request_id"] == exchange.request_id.decode() and len(line["request_id"]) == 32
    expected = {"client": "192.0.2.7", "protocol": "h3", "method": "GET", "authority": "example.org",
                "path": "/x?y=1", "status": 201, "bytes": 5, "vm": "vm-a", "attempts": 1}
    assert {k: line[k] for k in expected} == expected
    assert 0 <= line["first_byte_s"] <= line["duration_s"] and line["time"].endswith("+00:00")


async def test_access_log_batches_are_flushed_by_a_timer() -> None:
    """Buffered lines are written by the loop shortly after, without an explicit flush."""
    rig = Rig(["vm-a"], HealthPolicy(), access=True)
    with capture_logs() as logs:
        for _ in range(3):
            rig.send()
            rig.answer("vm-a", 200)
        await wait_until(lambda: not rig.access.buffer, timeout=5, what="the batch written")
    assert len([e for e in logs if e["event"] == "access"]) == 3


async def test_access_log_sampling_keeps_every_error() -> None:
    """With sampling at 0, successful requests are not logged but 5xx ones are."""
    rig = Rig(["vm-a"], HealthPolicy(ejection_consecutive_5xx=0), access=True)
    rig.access.sample = 0.0
    with capture_logs() as logs:
        for status in (200, 500, 204, 503):
            rig.send()
            rig.answer("vm-a", status)
        rig.access.flush()
    assert [e["status"] for e in logs if e["event"] == "access"] == [500, 503]


async def test_access_log_off_writes_nothing() -> None:
    """With the access log disabled, a request buffers and writes nothing."""
    rig = Rig(["vm-a"], HealthPolicy(), access=False)
    with capture_logs() as logs:
        rig.send()
        rig.answer("vm-a", 200)
        rig.access.flush()
    assert not [e for e in logs if e["event"] == "access"] and not rig.access.buffer


async def test_exposition_has_the_conventional_names() -> None:
    """The registry renders quicfleet_balancer_* counters with _total, the gauges and the histogram."""
    rig = Rig(["vm-a"], HealthPolicy(), panic=0.5)
    rig.send()
    rig.answer("vm-a", 200, b"abc")
    rig.telemetry.connection_opened()
    rig.telemetry.health_changed("vm-a", healthy=False)
    text = generate_latest(make_registry(rig.telemetry)).decode()
    for line in (
        'quicfleet_balancer_requests_total{code_class="2xx",protocol="h3",vm="vm-a"} 1.0',
        "quicfleet_balancer_response_bytes_total 3.0",
        "quicfleet_balancer_open_connections 1.0",
        'quicfleet_balancer_health_transitions_total{to="unhealthy"} 1.0',
        "quicfleet_balancer_panic 0.0",
        "quicfleet_balancer_request_duration_seconds_count 1.0",
        "quicfleet_balancer_retries_total 0.0",
    ):
        assert line in text, line


async def test_removed_vm_series_are_forgotten() -> None:
    """A VM removed from the fleet leaves the request and ejection series."""
    rig = Rig(["vm-a", "vm-b"], HealthPolicy())
    rig.send()
    rig.answer("vm-a", 200)
    rig.telemetry.ejected("vm-a")
    rig.router.remove("vm-a")
    assert rig.telemetry.requests == {} and rig.telemetry.ejections == {}


async def test_access_log_sampling_keeps_client_resets() -> None:
    """With sampling at 0, a request the client reset before any response is still logged, with reset_by."""
    rig = Rig(["vm-a"], HealthPolicy(), access=True)
    rig.access.sample = 0.0
    with capture_logs() as logs:
        rig.send().client_reset()
        rig.access.flush()
    (line,) = [e for e in logs if e["event"] == "access"]
    assert (line["status"], line["reset_by"], line["first_byte_s"]) == (0, "client", None)
