"""Access-log lines say what the balancer did: response flags, upstream address, bytes in and user agent."""

from __future__ import annotations

import asyncio
import random
from collections.abc import MutableMapping
from typing import Any

from structlog.testing import capture_logs

from services.balancer.core.backends import BackendTable
from services.balancer.core.headers import forwarding
from services.balancer.core.health import HealthPolicy
from services.balancer.core.options import ProxyOptions
from services.balancer.core.policy import Picker
from services.balancer.core.retry import RetryBudget
from services.balancer.core.upstream import CONNECT, RESET, TIMEOUT, UpstreamRequest
from services.balancer.process.telemetry import Telemetry
from services.balancer.proxy.accesslog import AccessLog
from services.balancer.proxy.exchange import Exchange
from services.balancer.proxy.ids import new_request_id
from services.balancer.proxy.router import Router
from tests.support.balancer_fakes import FakeClient, FakeUpstream


class Books:
    """A router over fake upstreams with the access log on, and one way to send a request through it."""

    def __init__(self, vms: list[str]) -> None:
        self.upstreams = {vm: FakeUpstream() for vm in vms}
        table = BackendTable(HealthPolicy())
        for n, vm in enumerate(vms):
            table.ready(vm, f"192.0.2.{10 + n}:443", now=0.0)
        self.access = AccessLog(asyncio.get_running_loop(), sample=0.0)
        self.router = Router(table, Picker("round_robin", rng=random.Random()), RetryBudget(ratio=1.0),
                             lambda b: self.upstreams[b.vm], ProxyOptions(), lambda _over: None, Telemetry(),
                             self.access)
        self.client = FakeClient()

    def send(self, method: bytes = b"GET", body: bool = False) -> Exchange:
        headers = forwarding([(b"user-agent", b"curl/8.5.0")], "198.51.100.4", b"example.org", b"3 lb",
                             fresh_id=new_request_id())
        request = UpstreamRequest(method, b"/", b"example.org", headers, body)
        exchange = Exchange(self.client, 0, request, "198.51.100.4", self.router)
        exchange.start()
        return exchange

    def line(self) -> MutableMapping[str, Any]:
        with capture_logs() as logs:
            self.access.flush()
        (line,) = [e for e in logs if e["event"] == "access"]
        return line


async def test_no_vm_is_flagged_UH_with_no_upstream() -> None:
    """A 503 made because no VM may take the request reads flags UH and no upstream address."""
    books = Books([])
    books.send()
    line = books.line()
    assert (line["status"], line["flags"], line["upstream"], line["attempts"]) == (503, "UH", None, 0)


async def test_a_connect_failure_retried_elsewhere_reads_UF_RT_with_the_second_vm() -> None:
    """A connect failure retried on the other VM, which answers 200, reads UF,RT and names the second address."""
    books = Books(["vm-a", "vm-b"])
    exchange = books.send()
    books.upstreams[exchange.vm].calls[-1].sink.on_failed(CONNECT)
    second = exchange.vm
    books.upstreams[second].calls[-1].answer(200, [(b"content-length", b"2")], b"ok")
    line = books.line()
    assert (line["status"], line["flags"], line["attempts"]) == (200, "UF,RT", 2)
    assert line["upstream"] == ("192.0.2.11:443" if second == "vm-b" else "192.0.2.10:443")
    assert line["user_agent"] == "curl/8.5.0"


async def test_a_timeout_after_a_retry_is_a_504_flagged_with_both_failures() -> None:
    """Connect failed, retried, then the retry timed out: a 504 the balancer made, flags UF,RT,UT."""
    books = Books(["vm-a", "vm-b"])
    exchange = books.send()
    books.upstreams[exchange.vm].calls[-1].sink.on_failed(CONNECT)
    books.upstreams[exchange.vm].calls[-1].sink.on_failed(TIMEOUT)
    line = books.line()
    assert (line["status"], line["flags"]) == (504, "UF,RT,UT")


async def test_a_vm_that_resets_mid_response_is_flagged_UR() -> None:
    """A VM reset after the response began ends the stream in a reset flagged UR (no retry possible)."""
    books = Books(["vm-a"])
    exchange = books.send()
    call = books.upstreams["vm-a"].calls[-1]
    call.sink.on_headers(200, [])
    call.sink.on_data(b"part")
    call.sink.on_failed(RESET)
    line = books.line()
    assert (line["status"], line["flags"], line["reset_by"]) == (200, "UR", "upstream")
    assert exchange.bytes_sent == 4


async def test_a_client_reset_reads_DC_and_counts_the_body_bytes_in() -> None:
    """An upload the client abandoned after 5 bytes reads flags DC and bytes_in 5."""
    books = Books(["vm-a"])
    exchange = books.send(b"POST", body=True)
    exchange.client_data(b"hello", end=False)
    exchange.client_reset()
    line = books.line()
    assert (line["flags"], line["bytes_in"], line["reset_by"]) == ("DC", 5, "client")


async def test_a_plain_answer_has_no_flags_and_may_be_sampled_away() -> None:
    """A VM's own 502 carries flags "-" (not the balancer's), and a sampled-out 200 writes no line at all."""
    books = Books(["vm-a"])
    books.access.sample = 1.0
    books.send()
    books.upstreams["vm-a"].calls[-1].answer(502, [(b"content-length", b"0")], b"")
    line = books.line()
    assert (line["status"], line["flags"], line["upstream"]) == (502, "-", "192.0.2.10:443")
    books.access.sample = 0.0
    books.send()
    books.upstreams["vm-a"].calls[-1].answer(200, [(b"content-length", b"0")], b"")
    with capture_logs() as logs:
        books.access.flush()
    assert [e for e in logs if e["event"] == "access"] == []
