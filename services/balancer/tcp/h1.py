"""HTTP/1.1 over TLS: one request at a time on a keep-alive connection, parsed and framed by h11.

h11 rather than httptools (which the upstream side uses for speed): httptools only parses, and
a server must also frame its responses (content-length, chunked or close-delimited, none for
HEAD/204/304), honour `connection: close` and HTTP/1.0, answer `expect: 100-continue` and
hold pipelined requests until the current response is done. h11 decides all of that from both
sides' messages, so none of it is hand-written here; this path serves a browser's first load
or two before it moves to HTTP/3, where its speed matters little. How a request head is read
(the HTTP/3-style block, the framings refused) is `h1request`'s; this module is the connection.
"""

from __future__ import annotations

from http import HTTPStatus

import h11
import structlog

from services.balancer.core.headers import Headers
from services.balancer.core.intake import Refusal, malformed
from services.balancer.proxy.exchange import Exchange
from services.balancer.tcp.connection import Listener, TcpConnection, refusal_headers
from services.balancer.tcp.h1request import (
    BARE_LF_REASON,
    BOTH_LENGTHS,
    OBS_FOLD_REASON,
    OLD_CODING,
    framing_problem,
    h3_headers,
    has_body,
    split_target,
)

__all__ = [  # the request-head names are re-exported: the front's tests read them from here
    "BARE_LF_REASON", "BOTH_LENGTHS", "HEADER_SLACK", "OBS_FOLD_REASON", "OLD_CODING", "H1Connection",
    "framing_problem", "h3_headers", "has_body", "reason", "split_target",
]

log = structlog.get_logger("balancer.tcp.h1")

HEADER_SLACK = 1024
"""h11's own limit on a header block sits this far above ours, so intake answers 431 first."""


def reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


class H1Connection(TcpConnection):
    """An HTTP/1.1 client connection; each request is one exchange (stream ids count requests)."""

    protocol = "h1"

    def __init__(self, listener: Listener) -> None:
        super().__init__(listener)
        limit = listener.limits.max_header_bytes + HEADER_SLACK
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limit)
        self.exchange: Exchange | None = None
        self.stream_id = 0
        self.method = b""
        self._head = b""
        self._in_events = False
        self._over = False
        """The current response is complete: start the next cycle (or close) once events are handled."""

    # asyncio protocol
    def data_received(self, data: bytes) -> None:
        self.h11.receive_data(data)
        self._events()

    def started(self) -> None:
        pass

    def lost(self) -> None:
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.client_reset()

    def idle_expired(self) -> None:
        if self.exchange is None and self.transport is not None:
            self.transport.close()

    def shutdown(self) -> None:
        """Close now when idle, else after the current response (sent with `connection: close`)."""
        self.closing = True
        if self.exchange is None and not self._over and self.transport is not None:
            self.transport.close()

    # requests
    def _events(self) -> None:
        """Handle what h11 parsed; after a response, start the next cycle and handle what was pipelined."""
        if self._in_events:
            return
        self._in_events = True
        try:
            while self._handle_events() and self._over and self._next_cycle():
                pass
        finally:
            self._in_events = False

    def _handle_events(self) -> bool:
        """Feed h11's events to the exchange until it needs data; False when the connection failed."""
        while True:
            head = self.h11.trailing_data[0] if self.h11.their_state is h11.IDLE else b""
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as error:
                self._bad_request(error)
                return False
            if isinstance(event, h11.Request):
                self._head = head  # the raw bytes of this request's head, for `framing_problem`
            if event is h11.NEED_DATA:
                return True
            if event is h11.PAUSED:
                if len(self.h11.trailing_data[0]) > self.listener.limits.max_header_bytes:
                    self.hold_reading("pipeline")  # a client pipelining faster than we answer
                return True
            if not self._guarded(event):
                return False

    def _guarded(self, event: object) -> bool:
        """Handle one event; a bug here cuts this connection (HTTP/1.1 has no stream to reset), never the listener."""
        try:
            self._event(event)
        except Exception:
            log.exception("tcp.h1_event_failed")
            exchange, self.exchange = self.exchange, None
            if exchange is not None:
                exchange.client_reset()
            self._abort()
            return False
        return True

    def _event(self, event: object) -> None:
        exchange = self.exchange
        if isinstance(event, h11.Request):
            self._request(event)
        elif isinstance(event, h11.Data) and exchange is not None:
            exchange.client_data(bytes(event.data), False)
        elif isinstance(event, h11.EndOfMessage) and exchange is not None and exchange.request.has_body:
            exchange.client_data(b"", True)

    def _request(self, event: h11.Request) -> None:
        self.disarm_idle()
        self.stream_id += 1
        self.method = bytes(event.method)
        problem = framing_problem(event, self._head)
        if problem is not None:
            self.closing = True  # what follows this head cannot be told apart from a next request
            self._refuse(malformed(problem))
            return
        outcome = self.begin(self.stream_id, h3_headers(event), has_body(event.headers))
        if isinstance(outcome, Refusal):
            self._refuse(outcome)
            return
        self.exchange = outcome
        outcome.start()
        if not outcome.finished and self.h11.they_are_waiting_for_100_continue:
            self._send(h11.InformationalResponse(status_code=100, headers=[]))

    def _refuse(self, refusal: Refusal) -> None:
        """Answer the current request with the balancer's own refusal; nothing of it goes upstream."""
        self.listener.router.telemetry.request_refused(refusal.reason, self.peer_ip, self.loop_time())
        self.send_headers(self.stream_id, refusal_headers(refusal), False)
        self.send_data(self.stream_id, refusal.body, True)

    def _bad_request(self, error: h11.RemoteProtocolError) -> None:
        """A request h11 cannot parse: answer its status hint (400, or 431 for a huge head) and close."""
        self.closing = True
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.client_reset()
        elif self.h11.our_state is h11.IDLE:
            status = error.error_status_hint
            self.stream_id += 1
            self._refuse(Refusal(status, f"{reason(status).decode()}\n".encode(), "unparsable"))
        if self.transport is not None:
            self.transport.close()

    def _next_cycle(self) -> bool:
        """Ready for the next request on this connection; False when it must close instead.

        It must close when either side said so, and when the response ended before the request
        body did (a refusal or an early answer): the rest of that body cannot be told apart from
        a next request without reading it all.
        """
        self._over = False
        reusable = self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE
        if not reusable or self.closing:
            if self.transport is not None:
                self.transport.close()
            return False
        self.h11.start_next_cycle()
        self.release_reading("pipeline")
        self.arm_idle()
        return True

    def _send(self, event: h11.Event) -> bool:
        """Frame `event` with h11 and write it; a response h11 rejects (a backend's bad header) cuts the connection."""
        try:
            data = self.h11.send(event)
        except h11.LocalProtocolError as error:
            log.info("tcp.h1_send_failed", error=str(error))
            self._abort()
            return False
        if data and self.transport is not None:
            self.transport.write(data)
        return True

    def _abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    # ClientStream for exchanges
    def send_headers(self, stream_id: int, headers: Headers, end: bool) -> None:
        if stream_id != self.stream_id or self.h11.our_state not in (h11.SEND_RESPONSE, h11.IDLE):
            return  # IDLE: answering a request h11 could not parse
        fields = self.with_alt_svc([h for h in headers if not h[0].startswith(b":")])
        if self.closing:
            fields.append((b"connection", b"close"))
        status = int(headers[0][1])
        if self._send(h11.Response(status_code=status, headers=fields, reason=reason(status))) and end:
            self._end()

    def send_data(self, stream_id: int, data: bytes, end: bool) -> None:
        if stream_id != self.stream_id or self.h11.our_state is not h11.SEND_BODY:
            return
        if data and self.method != b"HEAD" and not self._send(h11.Data(data=data)):
            return
        if end:
            self._end()

    def _end(self) -> None:
        if self._send(h11.EndOfMessage()):
            self._over = True
            self._events()

    def reset(self, stream_id: int, code: int) -> None:
        """HTTP/1.1 cannot cancel one response: cut the connection (the client sees it truncated)."""
        if stream_id == self.stream_id:
            self._abort()

    def grant(self, stream_id: int, buffered: int) -> None:
        """Stop reading an upload while its upstream lags more than a window behind (TCP flow control)."""
        window = self.listener.router.options.request_buffer_bytes
        if buffered > window:
            self.hold_reading("body")
        elif buffered <= window // 2:
            self.release_reading("body")

    def backlog(self, stream_id: int) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def done(self, exchange: Exchange) -> None:
        if exchange is self.exchange:
            self.exchange = None
            self.release_reading("body")
