"""One client connection: HTTP/3 requests on a QUIC connection become proxied exchanges.

Its life is one `Phase` (see `lifecycle`); admission is the listener's `Admission`, whose ticket the
connection holds from its first datagram and gives back when the engine reports its end. Three
rules close a connection that costs more than it asks for: a field section over the header limit
is never decoded (`qpack.BoundedFields`, answered 431), a client resetting streams faster than
`max_resets_per_s` is closed with H3_EXCESSIVE_LOAD (rapid reset), and a connection with no request
in flight for `http_idle_timeout_s` gets GOAWAY and closes, however many PINGs keep QUIC alive.
The way out (that idle timer, GOAWAY, the close) is `leaving`'s, the writes are `streams`'s.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, cast

import structlog

from services.balancer.core.admission import Ticket
from services.balancer.core.headers import Headers
from services.balancer.core.intake import TOO_LARGE, Refusal, intake
from services.balancer.core.resets import ResetBudget
from services.balancer.proxy.exchange import Exchange
from services.balancer.proxy.ids import new_request_id
from services.balancer.quic import Credit, H3Code
from services.balancer.quic.departure import Departure
from services.balancer.quic.leaving import LeavingSide, Listener
from services.balancer.quic.lifecycle import FEEDS_HTTP, Phase
from services.balancer.quic.qpack import BoundedFields

__all__ = ["REFUSALS", "SEND_ERRORS", "ClientConnection", "Listener"]  # Listener re-exported: declared in `leaving`

log = structlog.get_logger("balancer.client")

SEND_ERRORS: tuple[type[Exception], ...] = (AssertionError, ValueError, RuntimeError)
"""What an engine raises when writing to a stream the client reset or already finished (plus its H3Error)."""


REFUSALS = {"limit": "too many connections", "per_ip": "too many connections from this address"}
"""The CONNECTION_CLOSE reason a refused client reads, by `Admission.enter`'s reason."""


class ClientConnection(LeavingSide):
    """One client connection: HTTP/3 requests become exchanges (a mixin on the engine's protocol)."""

    h3: ClassVar[type[BoundedFields]]
    """The engine's declared HTTP/3 layer for client connections."""

    def __init__(self, quic: Any, stream_handler: Any = None) -> None:
        self.engine.tuning.harden(quic)
        super().__init__(quic, stream_handler)
        self.phase = Phase.NEW
        self.http: Any = None
        self.send_errors = (*SEND_ERRORS, self.engine.H3Error, *self.engine.tuning.send_errors)
        self.exchanges: dict[int, Exchange] = {}
        self.watched: list[Exchange] = []
        self.server: Listener | None = None
        self.ticket: Ticket | None = None
        """This connection's place at the listener's admission, from its first datagram to its end."""
        self._refusal = ""
        self.peer_ip = "unknown"
        self.ack_early = True
        self.coalesce_s = 0.0
        self._scheduled = False
        self._started = False
        """The datagram being handled started a request (see `datagram_received`)."""
        self._deferred: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        """When the last request in flight ended (the idle timer checks it; a request costs no timer)."""
        self.credit: Credit | None = None
        self.resets: ResetBudget | None = None
        self.next_request_id = 0
        """One past the highest request stream the client opened: where a GOAWAY draws the line."""
        self.departure: Departure | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        server = cast(Listener, transport.get_protocol())
        self.server = server
        tuning, limits = self.engine.tuning, server.limits
        steering = getattr(server, "steering", None)
        if steering is not None:
            tuning.own_cids(self._quic, steering.mint)
        tuning.set_ack_delay(self._quic, limits.ack_delay_s)
        self.ack_early = limits.ack_with_response
        self.coalesce_s = limits.coalesce_s
        self.credit = tuning.stream_credit(self._quic, server.router.options.request_buffer_bytes)
        self.resets = ResetBudget(limits.max_resets_per_s, self._loop.time())
        tuning.limit_streams(self._quic, limits.max_streams)

    def _admit(self, ip: str) -> None:
        """Enter the listener's admission at the first datagram (where the address is known), or be refused:
        over the connection limit, or its network over the per-address one."""
        server = self.server
        assert server is not None
        entered = server.admission.enter(ip, half_open=True)
        if isinstance(entered, str):
            self._refusal = REFUSALS[entered]
            self._become(Phase.REFUSED)  # closed now or after the handshake (see _refuse_now)
            server.router.telemetry.connection_refused(entered, ip, self._loop.time())
            return
        self.ticket = entered
        self._become(Phase.HANDSHAKING)
        server.router.telemetry.connection_opened()
        self._arm_idle()

    # engine events
    def quic_event_received(self, event: Any) -> None:
        engine = self.engine
        if isinstance(event, engine.ProtocolNegotiated) and event.alpn_protocol in engine.H3_ALPN:
            assert self.server is not None
            self.http = self.h3(self._quic, self.server.limits.max_header_bytes)
            engine.tuning.safe_qpack(self.http)
            if self.phase is Phase.DEPARTING:
                self._send_goaway()  # asked to leave during the handshake
        elif isinstance(event, engine.HandshakeCompleted):
            self._handshake_over()
            if self.phase is Phase.REFUSED and self._refuse_now(handshake_done=True):
                return
        elif isinstance(event, (engine.StreamReset, engine.StopSendingReceived)):
            self._client_reset(event.stream_id, isinstance(event, engine.StreamReset))
        elif isinstance(event, engine.ConnectionTerminated):
            self._terminated()
            return
        if self.http is not None and self.phase in FEEDS_HTTP:
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
        if self.phase is Phase.NEW:
            self._admit(self.peer_ip)
        self._quic.receive_datagram(data, addr, now=self._loop.time())  # type: ignore[arg-type]
        if self.phase is Phase.REFUSED and self._refuse_now():
            return
        if self.phase in FEEDS_HTTP and self.engine.tuning.is_closing(self._quic):
            self._become(Phase.CLOSING)  # the peer closed, or the engine did (idle timeout, protocol error)
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
        self._close(H3Code.CONNECTION_REFUSED, self._refusal)
        return True

    def _handshake_over(self) -> None:
        assert self.server is not None
        self.server.router.telemetry.handshake_done()
        if self.ticket is not None:
            self.server.admission.handshake_done(self.ticket)
        if self.phase is Phase.HANDSHAKING:
            self._become(Phase.OPEN)

    def _terminated(self) -> None:
        """The engine reported the end (after the draining period): give the ticket back, end every exchange."""
        self._disarm_idle()
        server = self.server
        if server is not None and self.ticket is not None and server.admission.leave(self.ticket):
            server.router.telemetry.connection_closed()
        self._reset_exchanges()
        if self.phase is not Phase.CLOSED:
            self._become(Phase.CLOSED)
        if server is not None:
            server.check_closing()

    def _reset_exchanges(self) -> None:
        for exchange in list(self.exchanges.values()):
            exchange.client_reset()

    def _client_reset(self, stream_id: int, reset: bool) -> None:
        """The client reset a stream (`reset`) or asked us to stop sending on it; resets spend its budget."""
        exchange = self.exchanges.get(stream_id)
        if exchange is not None:
            exchange.client_reset()
        if reset and self.resets is not None and not self.resets.spend(self._loop.time()):
            self._excessive_load()

    def _excessive_load(self) -> None:
        """Rapid reset: GOAWAY, end what is in flight, close with H3_EXCESSIVE_LOAD (RFC 9114 section 8.1)."""
        if self.phase not in FEEDS_HTTP:
            return
        log.info("client.too_many_resets", ip=self.peer_ip, per_s=self.resets.per_s if self.resets else None)
        if self.http is not None and self.engine.tuning.send_goaway(self.http, self.next_request_id):
            self.transmit()  # the GOAWAY in a packet of its own: the close that follows carries no stream data
        self._reset_exchanges()
        self._close(H3Code.H3_EXCESSIVE_LOAD, "too many stream resets")

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
        too_large = stream_id in self.http.too_large
        self.http.too_large.discard(stream_id)
        leaving = self.departure is not None and self.departure.refuses(stream_id)
        if leaving or len(self.exchanges) >= limits.max_streams:
            self.reset(stream_id, H3Code.H3_REQUEST_REJECTED)
            return
        request = TOO_LARGE if too_large else intake(
            headers, not ended, self.peer_ip, router.options, limits.max_header_bytes, new_request_id()
        )
        if isinstance(request, Refusal):
            router.telemetry.request_refused(request.reason, self.peer_ip, self._loop.time())
            self._refuse(stream_id, request.status, request.body)
            return
        exchange = Exchange(self, stream_id, request, self.peer_ip, router)
        self.exchanges[stream_id] = exchange
        self._started = True
        if not ended and self.credit is not None:
            self.credit.hold(stream_id)
        exchange.start()

    def _refuse(self, stream_id: int, status: int, body: bytes) -> None:
        headers = [(b":status", str(status).encode()), (b"content-length", str(len(body)).encode())]
        self.send_headers(stream_id, headers, False)
        self.send_data(stream_id, body, True)

    def done(self, exchange: Exchange) -> None:
        self.exchanges.pop(exchange.stream_id, None)
        if self.credit is not None:
            self.credit.release(exchange.stream_id)
        if self.departure is not None:
            self.departure.idle()
        self._arm_idle()
