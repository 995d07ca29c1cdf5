"""The HTTP/1.1 upstream on real loopback sockets: request framing as the VM reads it, refused
response heads, and client resets that keep pooled connections."""

from __future__ import annotations

import asyncio
import random

import httptools
import pytest

from services.balancer.core.backends import BackendTable
from services.balancer.core.headers import Headers
from services.balancer.core.health import HealthPolicy
from services.balancer.core.options import ProxyOptions
from services.balancer.core.policy import Picker
from services.balancer.core.retry import RetryBudget
from services.balancer.core.upstream import UpstreamRequest
from services.balancer.proxy.exchange import Exchange
from services.balancer.proxy.router import Router
from services.balancer.upstream.h1 import H1Pool
from tests.support import wait_until
from tests.support.balancer_fakes import FakeClient
from tests.support.h1server import H1Backend

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class _Seen(asyncio.Protocol):
    """One connection to the raw backend: keeps every byte and each request's fields and body."""

    def __init__(self, backend: RawBackend) -> None:
        self.backend = backend
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.fields: Headers = []
        self.body = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.backend.connections.append(self)

    def data_received(self, data: bytes) -> None:
        self.backend.raw += data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.backend.closed += 1

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.backend.requests.append((self.fields, self.body))
        transport = self.transport
        assert transport is not None
        if self.backend.delay_s is None:
            transport.write(self.backend.answer)
        elif self.backend.delay_s > 0:
            asyncio.get_running_loop().call_later(self.backend.delay_s, transport.write, self.backend.answer)


class RawBackend:
    """A VM that answers every whole request with `answer`, byte for byte, and records what it read."""

    def __init__(self, answer: bytes = OK, delay_s: float | None = None) -> None:
        """`delay_s`: answer that much later (0: never)."""
        self.answer = answer
        self.delay_s = delay_s
        self.raw = b""
        self.requests: list[tuple[Headers, bytes]] = []
        self.connections: list[_Seen] = []
        self.closed = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RawBackend:
        self._server = await asyncio.get_running_loop().create_server(lambda: _Seen(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()


class Proxy:
    """A router over one VM with a real HTTP/1.1 pool, and a fake client to send requests through it."""

    def __init__(self, port: int, linger_s: float = 2.0) -> None:
        table = BackendTable(HealthPolicy(ejection_consecutive=1000))
        table.ready("vm-a", f"127.0.0.1:{port}", now=0.0)
        self.pool = H1Pool("127.0.0.1", port, None, 2.0, 64, linger_s=linger_s)
        self.router = Router(table, Picker("round_robin", rng=random.Random()), RetryBudget(ratio=1.0),
                             lambda _b: self.pool, ProxyOptions(), lambda _over: None)
        self.client = FakeClient()
        self.streams = 0

    def send(self, method: bytes = b"GET", path: bytes = b"/", has_body: bool = False, length: int | None = None,
             fields: Headers | None = None) -> Exchange:
        request = UpstreamRequest(method, path, b"vm.test", fields or [(b"accept", b"*/*")], has_body, length)
        exchange = Exchange(self.client, self.streams, request, "192.0.2.7", self.router)
        self.streams += 4
        exchange.start()
        return exchange

    def status(self, exchange: Exchange) -> bytes:
        return dict(self.client.headers.get(exchange.stream_id, [])).get(b":status", b"")

    def close(self) -> None:
        self.router.close()


SMUGGLED: Headers = [(b"Content-Length", b"99"), (b"transfer-encoding", b"chunked"), (b"x-kept", b"1")]


async def test_a_known_length_reaches_the_vm_as_one_content_length_and_exactly_that_body() -> None:
    """Framing headers a front let through are dropped: the VM reads one `content-length: 5` and 5 bytes."""
    async with RawBackend() as backend:
        proxy = Proxy(backend.port)
        exchange = proxy.send(b"POST", has_body=True, length=5, fields=list(SMUGGLED))
        exchange.client_data(b"hel", end=False)
        exchange.client_data(b"lo", end=True)
        await wait_until(lambda: exchange.finished, timeout=5, what="the answer")
        ((fields, body),) = backend.requests
        assert [f for f in fields if f[0] in (b"content-length", b"transfer-encoding")] == [(b"content-length", b"5")]
        assert body == b"hello" and (b"x-kept", b"1") in fields and proxy.status(exchange) == b"200"
        proxy.close()


async def test_an_unknown_length_reaches_the_vm_chunked_and_without_content_length() -> None:
    """A body of unknown length is chunked by the balancer; no client `content-length` goes with it."""
    async with RawBackend() as backend:
        proxy = Proxy(backend.port)
        exchange = proxy.send(b"POST", has_body=True, length=None, fields=list(SMUGGLED))
        exchange.client_data(b"abc", end=False)
        exchange.client_data(b"def", end=True)
        await wait_until(lambda: exchange.finished, timeout=5, what="the answer")
        ((fields, body),) = backend.requests
        assert [f for f in fields if f[0] in (b"content-length", b"transfer-encoding")] == [
            (b"transfer-encoding", b"chunked")]
        assert body == b"abcdef"
        proxy.close()


async def test_bytes_beyond_the_declared_length_never_reach_the_vm() -> None:
    """Declared 5, sent 3 then 5 more before the end: the VM read the head and 3 bytes, then the connection closed."""
    async with RawBackend() as backend:
        proxy = Proxy(backend.port)
        exchange = proxy.send(b"POST", has_body=True, length=5)
        exchange.client_data(b"abc", end=False)
        await wait_until(lambda: backend.raw.endswith(b"abc"), timeout=5, what="the first bytes upstream")
        exchange.client_data(b"defgh", end=False)
        await wait_until(lambda: backend.closed == 1, timeout=5, what="the upstream connection closed")
        assert backend.raw.split(b"\r\n\r\n", 1)[1] == b"abc" and backend.requests == []
        assert proxy.status(exchange) == b"400"
        proxy.close()


@pytest.mark.parametrize(
    "head",
    [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
     b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
     b"HTTP/1.1 200 OK\r\nx-a: a\x01b\r\ncontent-length: 2\r\n\r\nok",
     b"HTTP/1.1 200 OK\r\nx a: b\r\ncontent-length: 2\r\n\r\nok"],
    ids=["length-and-chunked", "two-lengths", "control-byte", "bad-name"],
)
async def test_an_invalid_response_from_a_vm_is_the_balancers_502(head: bytes) -> None:
    """A response head with two framings, two lengths or a bad byte is refused: 502, counted, no VM byte passed."""
    async with RawBackend(head) as backend:
        proxy = Proxy(backend.port)
        exchange = proxy.send()
        await wait_until(lambda: exchange.finished, timeout=5, what="the answer")
        assert proxy.status(exchange) == b"502" and len(backend.requests) == 1
        assert proxy.client.data[exchange.stream_id] == b"invalid response from upstream\n"
        assert proxy.router.invalid_responses == {"vm-a": 1}
        proxy.close()


async def test_connection_fields_of_a_vm_response_are_not_passed_on() -> None:
    """`Connection`, what it names and `Keep-Alive` stay between the balancer and the VM."""
    head = (b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\n"
            b"Proxy-Connection: keep-alive\r\nX-Kept: yes  \r\ncontent-length: 2\r\n\r\nok")
    async with RawBackend(head) as backend:
        proxy = Proxy(backend.port)
        exchange = proxy.send()
        await wait_until(lambda: exchange.finished, timeout=5, what="the answer")
        fields = proxy.client.headers[exchange.stream_id]
        assert {n for n, _ in fields}.isdisjoint({b"connection", b"keep-alive", b"x-hop", b"proxy-connection"})
        assert (b"x-kept", b"yes") in fields and proxy.client.data[exchange.stream_id] == b"ok"
        proxy.close()


async def _reset_bursts(backend: H1Backend, proxy: Proxy, rounds: int, burst: int, linger: bool) -> None:
    """`rounds` times: `burst` slow GETs, each reset once the VM has read it (before its answer), then wait
    until the connections settled (pooled again after the dropped answers, or closed)."""
    for round_ in range(1, rounds + 1):
        exchanges = [proxy.send(path=b"/slow?ms=150") for _ in range(burst)]
        expected = round_ * burst
        await wait_until(lambda: backend.requests == expected, timeout=5, what="the burst upstream")  # noqa: B023
        for exchange in exchanges:
            exchange.client_reset()
        if linger:
            await wait_until(lambda: len(proxy.pool.idle) == burst, timeout=5, what="the connections pooled again")
        else:
            await wait_until(lambda: not backend.connections, timeout=5, what="the connections closed")


async def test_a_rapid_reset_burst_reuses_pooled_connections() -> None:
    """Three bursts of 20 requests reset before their answers open 20 connections to the VM, not 60."""
    async with H1Backend() as backend:
        proxy = Proxy(backend.port, linger_s=2.0)
        await _reset_bursts(backend, proxy, rounds=3, burst=20, linger=True)
        assert backend.accepted == 20 and len(backend.connections) == 20
        assert proxy.client.data == {} and proxy.router.in_flight() == 0
        proxy.close()


async def test_without_lingering_every_reset_costs_a_connection() -> None:
    """With lingering off (try timeout 0), each reset request closes its connection: the contrast to the above."""
    async with H1Backend() as backend:
        proxy = Proxy(backend.port, linger_s=0.0)
        await _reset_bursts(backend, proxy, rounds=3, burst=20, linger=False)
        assert backend.accepted == 60
        proxy.close()


async def test_an_abandoned_call_whose_answer_is_too_big_closes_its_connection() -> None:
    """A dropped answer beyond the byte cap is not read to its end: the connection is closed, not pooled."""
    big = b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n" + b"x" * 1_000_000
    async with RawBackend(big, delay_s=0.05) as backend:
        proxy = Proxy(backend.port)
        exchange = proxy.send()
        await wait_until(lambda: backend.requests, timeout=5, what="the request upstream")
        exchange.client_reset()
        await wait_until(lambda: backend.closed == 1, timeout=5, what="the connection closed")
        assert proxy.pool.idle == [] and proxy.client.data == {}
        proxy.close()


async def test_an_abandoned_call_whose_answer_never_comes_closes_after_the_linger_time() -> None:
    """A VM that never answers an abandoned request loses the connection after `linger_s`, not never."""
    async with RawBackend(delay_s=0) as backend:
        proxy = Proxy(backend.port, linger_s=0.2)
        exchange = proxy.send()
        await wait_until(lambda: backend.requests, timeout=5, what="the request upstream")
        exchange.client_reset()
        assert backend.closed == 0
        await wait_until(lambda: backend.closed == 1, timeout=5, what="the connection closed")
        assert proxy.pool.idle == []
        proxy.close()
