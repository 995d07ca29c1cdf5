"""One client connection: HTTP/3 requests on a QUIC connection become proxied exchanges."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Protocol

import structlog

from services.balancer.core.headers import Headers
from services.balancer.core.intake import Refusal, intake
from services.balancer.core.options import Limits
from services.balancer.proxy.exchange import Exchange
from services.balancer.proxy.ids import new_request_id
from services.balancer.proxy.router import Router
from services.balancer.quic import Credit, Engine, H3Code, ProtocolBase
from services.balancer.quic.departure import Departure

log = structlog.get_logger("balancer.client")

SEND_ERRORS: tuple[type[Exception], ...] = (AssertionError, ValueError, RuntimeError)
"""What an engine raises when writing to a stream the client reset or already finished (plus its H3Error)."""


REFUSALS = {"limit": "too many connections", "per_ip": "too many connections from this address"}
"""The CONNECTION_CLOSE reason a refused client reads, by `Limits.refusal`'s reason."""


class Listener(Protocol):
    """What a connection needs from the listener that accepted it: limits, router, counts.

    The listener (`server.ProxyServer`) is the transport's protocol; a connection reads it from
    there, so this module does not import the listener.
    """

    router: Router
    limits: Limits
    connections: int
    half_open: int

    def check_closing(self) -> None: ...


class ClientConnection(ProtocolBase):
    """One client connection: HTTP/3 requests become exchanges (a mixin on the engine's protocol)."""

    engine: ClassVar[Engine]

    def __init__(self, quic: Any, stream_handler: Any = None) -> None:
        self.engine.tuning.harden(quic)
        super().__init__(quic, stream_handler)
        self.http: Any = None
        self.send_errors = (*SEND_ERRORS, self.engine.H3Error, *self.engine.tuning.send_errors)
        self.exchanges: dict[int, Exchange] = {}
        self.watched: list[Exchange] = []
        self.server: Listener | None = None
        self._scheduled = False
        self._half_open = True
        self._counted = False
        self._admitted = False
        self._counted_ip = ""
        """The address counted against the per-address cap (the first one: a migration does not move it)."""
        self._refusal = ""
        self.peer_ip = "unknown"
        self.ack_early = True
        self.coalesce_s = 0.0
        self._started = False
        self._refused = False
        self._closing = False
        """The connection is closing: its events are no longer fed to HTTP/3 (qh3 refuses sends then)."""
        self._deferred: asyncio.TimerHandle | None = None
        self.credit: Credit | None = None
        self.next_request_id = 0
        """One past the highest request stream the client opened: where a GOAWAY draws the line."""
        self.departure: Departure | None = None
        self._leave_when_negotiated = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.server = transport.get_protocol()  # type: ignore[assignment]
        assert self.server is not None
        tuning = self.engine.tuning
        steering = getattr(self.server, "steering", None)
        if steering is not None:
            tuning.own_cids(self._quic, steering.mint)
        tuning.set_ack_delay(self._quic, self.server.limits.ack_delay_s)
        self.ack_early = self.server.limits.ack_with_response
        self.coalesce_s = self.server.limits.coalesce_s
        self.credit = tuning.stream_credit(self._quic, self.server.router.options.request_buffer_bytes)
        tuning.limit_streams(self._quic, self.server.limits.max_streams)

    def _admit(self, ip: str) -> None:
        """Count the connection at its first datagram (where its address is known), or mark it refused:
        over the connection limit, or its address over the per-address one."""
        server = self.server
        assert server is not None
        self._admitted = True
        reason = server.limits.refusal(server.connections, ip)
        if reason is None:
            self._counted, self._counted_ip = True, ip
            server.connections += 1
            server.router.telemetry.connection_opened()
            server.half_open += 1
            return
        self._refusal = REFUSALS[reason]
        self._half_open = False
        self._refused = True  # closed now or after the handshake (see _refuse_now)
        server.router.telemetry.connection_refused(reason, ip, self._loop.time())

    # engine events
    def quic_event_received(self, event: Any) -> None:
        engine = self.engine
        if isinstance(event, engine.ProtocolNegotiated) and event.alpn_protocol in engine.H3_ALPN:
            self.http = engine.H3Connection(self._quic)
            engine.tuning.safe_qpack(self.http)
            if self._leave_when_negotiated:
                self.go_away()
        elif isinstance(event, engine.HandshakeCompleted):
            if self.server is not None:
                self.server.router.telemetry.handshake_done()
            self._handshake_over()
            if self._refused and self._refuse_now(handshake_done=True):
                return
        elif isinstance(event, (engine.StreamReset, engine.StopSendingReceived)):
            self._client_reset(event.stream_id)
        elif isinstance(event, engine.ConnectionTerminated):
            self._terminated()
            return
        if self.http is not None and not self._closing:
            try:
                http_events = self.http.handle_event(event)
            except engine.H3Error:
                log.info("client.protocol_error")
                return
            for http_event in http_events:
                self._guarded(http_event)

    def _guarded(self, event: Any) -> None:
        """Handle one HTTP/3 event; a bug here costs that stream, never the connection."""
        try:
            self._http_event(event)
        except Exception:
            stream_id = getattr(event, "stream_id", None)
            log.exception("client.event_failed", stream_id=stream_id)
            exchange = self.exchanges.pop(stream_id, None) if stream_id is not None else None
            if exchange is not None:
                exchange.client_reset()
            if stream_id is not None:
                self.reset(stream_id, H3Code.H3_INTERNAL_ERROR)

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        """Feed the QUIC core; hold the transmit briefly when the datagram started new requests
        while others were already in flight.

        aioquic would transmit at once, sending the QPACK decoder-stream acknowledgement of a
        request in a packet of its own. Under load, waiting up to `coalesce_s` for the response
        (sent sooner when it arrives) puts that, the ACK and the response in one packet. With
        nothing else in flight the wait would only add latency (and there is little to save), so
        the connection transmits at once.
        """
        self.peer_ip = str(addr[0])
        if not self._admitted:
            self._admit(self.peer_ip)
        self._quic.receive_datagram(data, addr, now=self._loop.time())  # type: ignore[arg-type]
        if self._refused and self._refuse_now():
            return
        self._closing = self.engine.tuning.is_closing(self._quic)
        before = len(self.exchanges)
        self._started = False
        self._process_events()
        if self._started and self.coalesce_s > 0 and before > 0:
            self._defer()
        else:
            self.transmit()
        if self.watched:
            self.watched = [e for e in self.watched if not e.resume_if_drained()]

    def _refuse_now(self, handshake_done: bool = False) -> bool:
        """Close a connection over the limit: at its first datagram, or after the handshake where
        the engine cannot close earlier (qh3's close before it leaves the client waiting)."""
        if not (handshake_done or self.engine.tuning.closes_before_handshake):
            return False
        self._refused = False
        self._closing = True
        self._quic.close(error_code=H3Code.CONNECTION_REFUSED, reason_phrase=self._refusal)
        self.transmit()
        return True

    def _handshake_over(self) -> None:
        if self._half_open and self.server is not None:
            self._half_open = False
            self.server.half_open -= 1

    def _terminated(self) -> None:
        self._handshake_over()
        if self._counted and self.server is not None:
            self._counted = False
            self.server.connections -= 1
            self.server.limits.per_ip.leave(self._counted_ip)
            self.server.router.telemetry.connection_closed()
        for exchange in list(self.exchanges.values()):
            exchange.client_reset()
        self._closing = True
        if self.server is not None:
            self.server.check_closing()

    def _client_reset(self, stream_id: int) -> None:
        exchange = self.exchanges.get(stream_id)
        if exchange is not None:
            exchange.client_reset()

    def _http_event(self, event: Any) -> None:
        if isinstance(event, self.engine.HeadersReceived):
            exchange = self.exchanges.get(event.stream_id)
            if exchange is None:
                self._new_request(event.stream_id, event.headers, event.stream_ended)
            elif event.stream_ended:
                exchange.client_data(b"", True)
        elif isinstance(event, self.engine.DataReceived):
            exchange = self.exchanges.get(event.stream_id)
            if exchange is not None:
                exchange.client_data(event.data, event.stream_ended)

    def _new_request(self, stream_id: int, headers: Headers, ended: bool) -> None:
        assert self.server is not None
        limits, router = self.server.limits, self.server.router
        self.next_request_id = max(self.next_request_id, stream_id + 4)
        leaving = self.departure is not None and self.departure.refuses(stream_id)
        if leaving or len(self.exchanges) >= limits.max_streams:
            self.reset(stream_id, H3Code.H3_REQUEST_REJECTED)
            return
        request = intake(headers, not ended, self.peer_ip, router.options, limits.max_header_bytes, new_request_id())
        if isinstance(request, Refusal):
            self._refuse(stream_id, request.status, request.body)
            return
        exchange = Exchange(self, stream_id, request, self.peer_ip, router)
        self.exchanges[stream_id] = exchange
        self._started = True
        if not ended and self.credit is not None:
            self.credit.hold(stream_id)
        router.dispatch(exchange)

    def _refuse(self, stream_id: int, status: int, body: bytes) -> None:
        headers = [(b":status", str(status).encode()), (b"content-length", str(len(body)).encode())]
        self.send_headers(stream_id, headers, False)
        self.send_data(stream_id, body, True)

    # ClientStream for exchanges
    def send_headers(self, stream_id: int, headers: Headers, end: bool) -> None:
        if self.http is not None:
            try:
                self.http.send_headers(stream_id, headers, end_stream=end)
            except self.send_errors:
                return
            self.schedule()

    def send_data(self, stream_id: int, data: bytes, end: bool) -> None:
        if self.http is not None:
            try:
                self.http.send_data(stream_id, data, end_stream=end)
            except self.send_errors:
                return
            self.schedule()

    def reset(self, stream_id: int, code: int) -> None:
        try:
            self._quic.reset_stream(stream_id, code)
        except self.send_errors:
            return
        self.schedule()

    def backlog(self, stream_id: int) -> int:
        return self.engine.tuning.stream_backlog(self._quic, stream_id)

    def grant(self, stream_id: int, buffered: int) -> None:
        if self.credit is not None and self.credit.update(stream_id, buffered):
            self.schedule()

    def watch(self, exchange: Exchange) -> None:
        self.watched.append(exchange)

    def done(self, exchange: Exchange) -> None:
        self.exchanges.pop(exchange.stream_id, None)
        if self.credit is not None:
            self.credit.release(exchange.stream_id)
        if self.departure is not None:
            self.departure.idle()

    # going away (drain of this process)
    def go_away(self) -> None:
        """HTTP/3 GOAWAY: the client opens new requests on a new connection (a sibling takes it), the
        requests it already sent finish here, then the connection closes with H3_NO_ERROR."""
        if self.departure is not None or self._closing:
            return
        if self.http is None and self._half_open:
            self._leave_when_negotiated = True  # mid-handshake: closing now would fail the client's connect
            return
        self.departure = Departure(self._loop, self.next_request_id, lambda: bool(self.exchanges), self._close_now)
        if self.http is None or not self.engine.tuning.send_goaway(self.http, self.departure.line):
            self._close_now()
            return
        self.schedule()
        self.departure.idle()

    def _close_now(self) -> None:
        if not self._closing:
            self._closing = True
            self._quic.close(error_code=H3Code.H3_NO_ERROR, reason_phrase="going away")
            self.transmit()
        if self.server is not None:
            self.server.check_closing()

    @property
    def closing(self) -> bool:
        return self._closing or self.engine.tuning.is_closing(self._quic)

    def schedule(self) -> None:
        """Coalesce the sends of one loop iteration into one transmit (fewer, fuller datagrams)."""
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _defer(self) -> None:
        """Transmit within `coalesce_s` at the latest (earlier if a response is ready)."""
        if self._deferred is None and not self._scheduled:
            self._deferred = self._loop.call_later(self.coalesce_s, self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None
        if self.ack_early:
            self.engine.tuning.ack_with_next_packet(self._quic, self._loop.time())
        self.transmit()
