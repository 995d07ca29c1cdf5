"""One keep-alive HTTP/1.1 connection to a backend and the call (one request) it serves at a time.

Split from `h1` so that module keeps the pool (reuse, opening, idle cap, TLS context) and this one the
wire: the request head and body framing (`core.framing`), the httptools callbacks that stream the
response to the sink, backpressure (`pause()` stops reading the socket), and lingering on an abandoned
call's response. The pool is reached through `Pool`, what a connection needs of it, so this module
does not import `h1`.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import httptools
import structlog

from services.balancer.core.framing import chunked, upstream_fields
from services.balancer.core.upstream import INVALID, PROTOCOL, RESET, Sink, UpstreamRequest

log = structlog.get_logger("balancer.upstream.h1")

CHUNK_END = b"0\r\n\r\n"
LINGER_MAX_BYTES = 64 * 1024
"""Response body bytes an abandoned call reads and drops at most before the connection is closed instead."""
OWS = b" \t"


class Pool(Protocol):
    """What a connection needs of the pool that opened it (`h1.H1Pool`): the linger time, and a place
    to go back to when idle or to be forgotten when lost."""

    linger_s: float

    def release(self, conn: H1Connection) -> None: ...

    def forget(self, conn: H1Connection) -> None: ...


def request_head(request: UpstreamRequest) -> bytes:
    """Request line and headers of an HTTP/1.1 request, framed by `core.framing` alone."""
    lines = [request.method + b" " + request.path + b" HTTP/1.1", b"host: " + request.authority]
    lines.extend(name + b": " + value for name, value in upstream_fields(request, h1=True))
    return b"\r\n".join(lines) + b"\r\n\r\n"


class H1Call:
    """One request on the pool; buffers the body until a connection is there."""

    __slots__ = ("_ended", "_pending", "aborted", "chunked", "conn", "paused", "request", "sink")

    def __init__(self, request: UpstreamRequest, sink: Sink) -> None:
        self.request = request
        self.sink = sink
        self.conn: H1Connection | None = None
        self.chunked = chunked(request)
        self._pending: list[bytes] = [request_head(request)]
        self._ended = not request.has_body
        self.paused = False
        self.aborted = False

    @property
    def request_sent(self) -> bool:
        return self._ended and not self._pending

    def send_body(self, data: bytes, end: bool) -> None:
        """Forward a piece of the request body (chunk-framed when the length is unknown)."""
        if self._ended:
            return
        if self.chunked:
            piece = (b"%x\r\n" % len(data) + data + b"\r\n" if data else b"") + (CHUNK_END if end else b"")
        else:
            piece = data
        self._ended = end
        if self.conn is not None:
            self.conn.write(piece)
        elif piece:
            self._pending.append(piece)

    def flush_to(self, conn: H1Connection) -> None:
        """Attach to a connection and write what was buffered."""
        self.conn = conn
        conn.write(b"".join(self._pending))
        self._pending.clear()
        if self.paused:
            conn.pause()

    def pause(self) -> None:
        self.paused = True
        if self.conn is not None:
            self.conn.pause()

    def resume(self) -> None:
        self.paused = False
        if self.conn is not None:
            self.conn.resume()

    def buffered(self) -> int:
        """Bytes waiting for a connection plus those in the socket transport's write buffer."""
        waiting = sum(map(len, self._pending))
        transport = self.conn.transport if self.conn is not None else None
        return waiting + (transport.get_write_buffer_size() if transport is not None else 0)

    def abandon(self) -> None:
        """The client went away: a request fully sent whose response has not begun keeps its connection
        (the response is dropped as it comes); anything else is aborted."""
        conn = self.conn
        if conn is not None and conn.call is self and self.request_sent and conn.can_linger():
            self.aborted = True
            conn.linger()
        else:
            self.abort()

    def abort(self) -> None:
        """The response was refused or the call failed: drop the connection (its response state
        is unknown), and let nothing more reach the sink, not even the rest of the bytes in the parser."""
        self.aborted = True
        if self.conn is not None:
            if self.conn.call is self:
                self.conn.call = None
            self.conn.close()


class H1Connection(asyncio.Protocol):
    """One keep-alive TCP (or TLS) connection to a backend, serving one call at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.call: H1Call | None = None
        self.closed = False
        self._names: list[bytes] = []
        self._values: list[bytes] = []
        self._status = 0
        self._head = False
        self.responding = False
        """A final response head arrived for the current call (too late to linger)."""
        self.lingering = False
        """The call was abandoned: its response is read and dropped, then the connection is pooled."""
        self._dropped = 0
        self._linger_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def start(self, call: H1Call) -> None:
        self.call = call
        self._head = call.request.method == b"HEAD"
        self.responding = False
        call.flush_to(self)

    def can_linger(self) -> bool:
        """Whether an abandoned call's response can still be dropped cheaply here."""
        return not self.closed and not self.responding and not self._head and self.pool.linger_s > 0

    def linger(self) -> None:
        """Detach the abandoned call and read its response to the end, within `linger_s` and the byte cap."""
        self.call = None
        self.lingering = True
        self._dropped = 0
        self.resume()
        self._linger_timer = asyncio.get_running_loop().call_later(self.pool.linger_s, self.close)

    def _linger_over(self, reusable: bool) -> None:
        self.lingering = False
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        if reusable and not self.closed:
            self.pool.release(self)
        else:
            self.close()

    def write(self, data: bytes) -> None:
        if self.transport is not None and data and not self.closed:
            self.transport.write(data)

    def pause(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            if error.__cause__ is not None:
                log.error("upstream.callback_failed", exc_info=error.__cause__)
            # a head the parser refuses (two framings, two lengths, a bad byte) is an invalid response
            self._fail(PROTOCOL if self.responding or error.__cause__ is not None else INVALID)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        self._fail(RESET)

    def _fail(self, reason: str) -> None:
        call, self.call = self.call, None
        if call is not None and not call.aborted:
            call.sink.on_failed(reason)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._names.clear()
        self._values.clear()

    def on_header(self, name: bytes, value: bytes) -> None:
        """Names lower-cased (as HTTP/2 and HTTP/3 need them), values without the trailing whitespace
        httptools leaves (OWS, not part of the value)."""
        self._names.append(name.lower())
        self._values.append(value.rstrip(OWS))

    def on_headers_complete(self) -> None:
        self._status = self.parser.get_status_code()
        call = self.call
        if self._status < 200:
            return
        self.responding = True
        if call is None:
            return
        call.sink.on_headers(self._status, list(zip(self._names, self._values, strict=True)))
        if self._head and self.call is call:
            self._done(reusable=False)

    def on_body(self, body: bytes) -> None:
        if self.call is not None:
            self.call.sink.on_data(body)
        elif self.lingering:
            self._dropped += len(body)
            if self._dropped > LINGER_MAX_BYTES:
                self.close()

    def on_message_complete(self) -> None:
        if self._status < 200:
            return
        if self.call is not None:
            self._done(reusable=self.parser.should_keep_alive())
        elif self.lingering:
            self._linger_over(reusable=self.parser.should_keep_alive())

    def _done(self, reusable: bool) -> None:
        call, self.call = self.call, None
        assert call is not None
        if reusable and call.request_sent and not self.closed:
            self.resume()
            self.pool.release(self)
        else:
            self.close()
        call.sink.on_end()
