"""Exchanges with in-memory fakes: declared body lengths, refused VM responses, and client resets."""

from __future__ import annotations

import random

from structlog.testing import capture_logs

from services.balancer.core.backends import BackendTable
from services.balancer.core.headers import Headers
from services.balancer.core.health import HealthPolicy
from services.balancer.core.options import ProxyOptions
from services.balancer.core.policy import Picker
from services.balancer.core.retry import RetryBudget
from services.balancer.core.upstream import INVALID, UpstreamRequest
from services.balancer.proxy.exchange import Exchange
from services.balancer.proxy.router import Router
from tests.support.balancer_fakes import FakeCall, FakeClient, FakeUpstream

VMS = ("vm-a", "vm-b")


class Rig:
    """Two VMs behind a router with fake upstreams, and a client that sends through it."""

    def __init__(self, health: HealthPolicy | None = None) -> None:
        self.upstreams = {vm: FakeUpstream() for vm in VMS}
        table = BackendTable(health or HealthPolicy())
        for n, vm in enumerate(VMS):
            table.ready(vm, f"127.0.0.1:{9000 + n}", now=0.0)
        self.router = Router(table, Picker("round_robin", rng=random.Random()), RetryBudget(ratio=1.0),
                             lambda b: self.upstreams[b.vm], ProxyOptions(), lambda _over: None)
        self.client = FakeClient()
        self.streams = 0

    def send(self, method: bytes = b"GET", has_body: bool = False, length: int | None = None) -> Exchange:
        request = UpstreamRequest(method, b"/", b"example.org", [(b"accept", b"*/*")], has_body, length)
        exchange = Exchange(self.client, self.streams, request, "192.0.2.7", self.router)
        self.streams += 4
        exchange.start()
        return exchange

    def calls(self) -> list[FakeCall]:
        return [call for upstream in self.upstreams.values() for call in upstream.calls]

    def status(self, exchange: Exchange) -> bytes:
        return dict(self.client.headers[exchange.stream_id])[b":status"]


async def test_a_body_longer_than_declared_is_a_400_and_the_excess_never_goes_upstream() -> None:
    """Declared 5, sent 3 then 4 more: the VM got the 3 bytes only, its call is aborted, the client gets 400."""
    rig = Rig()
    exchange = rig.send(b"POST", has_body=True, length=5)
    exchange.client_data(b"abc", end=False)
    exchange.client_data(b"defg", end=False)
    (call,) = rig.calls()
    assert call.body == b"abc" and call.aborted and not call.ended
    assert rig.status(exchange) == b"400" and exchange.finished


async def test_a_body_shorter_than_declared_at_its_end_is_malformed() -> None:
    """Declared 5, the stream ends after 4 bytes: 400, and the VM never sees the end of the body."""
    rig = Rig()
    exchange = rig.send(b"POST", has_body=True, length=5)
    exchange.client_data(b"abcd", end=True)
    (call,) = rig.calls()
    assert call.body == b"" and not call.ended and call.aborted
    assert rig.status(exchange) == b"400"


async def test_a_declared_length_with_no_body_at_all_is_refused_before_any_vm() -> None:
    """Headers that end the stream but declare 3 bytes are answered 400 without an upstream call."""
    rig = Rig()
    exchange = rig.send(b"POST", has_body=False, length=3)
    assert rig.status(exchange) == b"400" and rig.calls() == []


async def test_an_excess_after_the_response_began_resets_the_stream() -> None:
    """Once the VM answered, a body over its length resets the client stream instead of a 400."""
    rig = Rig()
    exchange = rig.send(b"POST", has_body=True, length=2)
    (call,) = rig.calls()
    call.sink.on_headers(200, [(b"content-type", b"text/plain")])
    exchange.client_data(b"abc", end=False)
    assert exchange.stream_id in rig.client.resets and call.aborted and call.body == b""
    assert exchange.reset_by == "balancer"


async def test_a_body_of_exactly_its_length_goes_through() -> None:
    """A body matching its declared length reaches the VM whole, end included."""
    rig = Rig()
    exchange = rig.send(b"PUT", has_body=True, length=5)
    exchange.client_data(b"ab", end=False)
    exchange.client_data(b"cde", end=True)
    (call,) = rig.calls()
    assert call.body == b"abcde" and call.ended and not call.aborted


async def test_an_invalid_response_is_a_502_never_forwarded_nor_retried_and_counted() -> None:
    """A response head with a CR LF in a value gives the client the balancer's 502, not one byte of the VM's."""
    rig = Rig()
    exchange = rig.send()
    (call,) = rig.calls()
    call.answer(200, [(b"x-a", b"1\r\nset-cookie: stolen=1")], b"smuggled")
    assert rig.status(exchange) == b"502" and b"smuggled" not in rig.client.data[exchange.stream_id]
    assert call.aborted and len(rig.calls()) == 1
    assert rig.router.invalid_responses == {"vm-a": 1}
    assert all(b"set-cookie" not in name for name, _ in rig.client.headers[exchange.stream_id])


async def test_an_unparsable_response_reported_by_the_upstream_is_a_502_without_retry() -> None:
    """An upstream that refused the VM's head (`INVALID`) ends the exchange in 502 even for a GET."""
    rig = Rig()
    exchange = rig.send()
    rig.calls()[0].sink.on_failed(INVALID)
    assert rig.status(exchange) == b"502" and len(rig.calls()) == 1
    assert rig.router.invalid_responses == {"vm-a": 1}


async def test_invalid_responses_are_logged_a_few_times_then_only_counted() -> None:
    """A VM that keeps sending bad heads is counted every time but logged only a few times per window."""
    rig = Rig(HealthPolicy(ejection_consecutive=1000))  # no ejection: every request meets a bad head
    with capture_logs() as logs:
        for _ in range(20):
            exchange = rig.send()
            two_lengths: Headers = [(b"content-length", b"1"), (b"content-length", b"2")]
            rig.upstreams[exchange.vm].calls[-1].sink.on_headers(200, two_lengths)
    lines = [e for e in logs if e["event"] == "backend.invalid_response"]
    assert sum(rig.router.invalid_responses.values()) == 20
    assert 1 <= len(lines) <= 10 and lines[0]["why"] == "content-length"


async def test_connection_specific_response_fields_never_reach_the_client() -> None:
    """connection, keep-alive, proxy-connection, transfer-encoding, upgrade and what connection names are dropped."""
    rig = Rig()
    exchange = rig.send()
    fields: Headers = [(b"connection", b"keep-alive, x-hop"), (b"keep-alive", b"timeout=5"),
                       (b"proxy-connection", b"keep-alive"), (b"transfer-encoding", b"chunked"),
                       (b"upgrade", b"websocket"), (b"x-hop", b"1"), (b"x-kept", b"yes")]
    rig.calls()[0].answer(200, fields, b"ok")
    names = {name for name, _ in rig.client.headers[exchange.stream_id]}
    assert names.isdisjoint({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
                             b"x-hop"})
    assert b"x-kept" in names and rig.client.data[exchange.stream_id] == b"ok"


async def test_a_client_reset_abandons_the_call_rather_than_aborting_it() -> None:
    """A reset lets the upstream decide whether the connection can be kept (`abandon`), and ends the exchange."""
    rig = Rig()
    exchange = rig.send()
    exchange.client_reset()
    (call,) = rig.calls()
    assert call.abandoned and exchange.finished and exchange.reset_by == "client"
    assert rig.router.in_flight() == 0


async def test_the_router_answers_with_values_and_keeps_no_way_back_into_exchanges() -> None:
    """A retry is the exchange's: the router offers choose/may_retry/track and no dispatch or retry callback."""
    rig = Rig()
    assert not hasattr(rig.router, "dispatch") and not hasattr(rig.router, "retry")
    exchange = rig.send()
    rig.calls()[0].sink.on_failed("connect")
    assert exchange.attempts == 2 and exchange.vm == "vm-b"
    assert rig.router.in_flight_by == {rig.router.table.get("vm-b"): {exchange}}
