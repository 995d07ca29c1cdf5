"""HTTP/2 over TLS with the `h2` state machine: every stream is one exchange.

h2 does the framing, HPACK and flow-control bookkeeping and never touches the socket; this
module feeds it bytes, turns its events into exchange calls and writes what it wants sent.
HTTP/2's request headers are already in HTTP/3's form (pseudo-headers first, lower-case), so
they go to intake as they are; h2 checks them first (`validate_inbound_headers`: upper-case names,
connection-specific fields, `te`, CR/LF/NUL, pseudo-header order, conflicting lengths, all a
connection error) and intake holds what h2 lets through (a space in `:path`, control characters,
userinfo in `:authority`, an absolute `:path`) to the request model every front shares.

Two limits against a client that costs more than it sends: HPACK decoding stops once the decoded
list passes twice the header limit (an HPACK bomb, one big table entry referenced thousands of
times, is cut at a few KiB of work, GOAWAY ENHANCE_YOUR_CALM), and a budget of stream resets per
second (rapid reset, CVE-2023-44487) after which the connection gets the same GOAWAY. Two
flow-control duties are the balancer's, not h2's:

- responses (the sending side, `h2send`): h2 refuses DATA beyond the peer's window, so each stream
  keeps what does not fit yet; that plus the socket's buffer is the stream's backlog, which pauses its upstream;
- request bodies: received bytes are acknowledged (WINDOW_UPDATE) only as the upstream drains
  them, so a fast uploader to a slow VM waits in its own window, not in the balancer's memory.
"""

from __future__ import annotations

import asyncio
import contextlib

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import structlog
from h2.errors import ErrorCodes

from services.balancer.core.headers import Headers
from services.balancer.core.intake import Refusal
from services.balancer.core.resets import ResetBudget
from services.balancer.proxy.exchange import Exchange
from services.balancer.quic import H3Code
from services.balancer.tcp.connection import Listener, refusal_headers
from services.balancer.tcp.h2send import H2Sending

log = structlog.get_logger("balancer.tcp.h2")

DEFAULT_WINDOW = 65_535
"""The connection window every HTTP/2 connection starts with (RFC 9113 section 6.9.2)."""
UPLOADS_AT_FULL_SPEED = 4
"""Uploads of one connection that may each fill their stream window before the connection's throttles them."""
DECODED_HEADERS_FACTOR = 2
"""HPACK decoding stops at this many times the header limit: a block a little over it still gets intake's
431, a bomb is cut long before it costs memory (the advertised SETTINGS_MAX_HEADER_LIST_SIZE is the limit)."""


class H2Connection(H2Sending):
    """An HTTP/2 client connection."""

    protocol = "h2"

    def __init__(self, listener: Listener) -> None:
        super().__init__(listener)
        self.window = listener.router.options.request_buffer_bytes
        limits = listener.limits
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=True, normalize_inbound_headers=True,
        ))
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_streams,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.window,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_bytes,
        })
        # Initial settings never pass through h2's settings-acknowledged hook, so the decoder's cap is set here.
        self.h2.decoder.max_header_list_size = limits.max_header_bytes * DECODED_HEADERS_FACTOR
        self.resets: ResetBudget | None = None
        self.exchanges: dict[int, Exchange] = {}
        self.pending: dict[int, bytearray] = {}
        """Response bytes of each stream that its flow-control window does not take yet."""
        self.ending: set[int] = set()
        """Streams whose response ends once `pending` is sent."""
        self.unread: set[int] = set()
        """Streams to stop with NO_ERROR once their response is sent (the body is not wanted)."""
        self.received: dict[int, int] = {}
        self.acked: dict[int, int] = {}
        self._scheduled = False

    # asyncio protocol
    def started(self) -> None:
        self.resets = ResetBudget(self.listener.limits.max_resets_per_s, asyncio.get_running_loop().time())
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(self.window * UPLOADS_AT_FULL_SPEED - DEFAULT_WINDOW)
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            log.info("tcp.h2_protocol_error", error=str(error))
            self.flush()
            self._close()
            return
        for event in events:
            self._guarded(event)
        self.flush()

    def _guarded(self, event: h2.events.Event) -> None:
        """Handle one event; a bug here costs its stream, never the connection."""
        try:
            self._event(event)
        except Exception:
            stream_id = getattr(event, "stream_id", None)
            log.exception("tcp.h2_event_failed", stream_id=stream_id)
            exchange = self.exchanges.get(stream_id) if stream_id else None
            if exchange is not None:
                exchange.client_reset()
            if stream_id:
                self.reset(stream_id, H3Code.H3_INTERNAL_ERROR)

    def lost(self) -> None:
        self.pending.clear()
        for exchange in list(self.exchanges.values()):
            exchange.client_reset()

    def idle_expired(self) -> None:
        if self.exchanges or self.pending:
            self.arm_idle()
        else:
            self._goodbye()

    def shutdown(self) -> None:
        """GOAWAY once the streams in flight are done (h2 takes no frame after its GOAWAY)."""
        self.closing = True
        self._maybe_goodbye()

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            headers = [(bytes(n), bytes(v)) for n, v in event.headers]
            self._request(event.stream_id, headers, event.stream_ended is None)
        elif isinstance(event, h2.events.DataReceived):
            self._data(event.stream_id, event.data, event.flow_controlled_length)
        elif isinstance(event, h2.events.StreamEnded):
            self._body_ended(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self._stream_reset(event.stream_id)
            if event.remote_reset:
                self._count_reset()
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self._push_all()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._close()  # h2 sends nothing after the client's GOAWAY, so in-flight streams are lost

    # requests
    def _request(self, stream_id: int, headers: Headers, has_body: bool) -> None:
        if self.closing or len(self.exchanges) >= self.listener.limits.max_streams:
            self.reset(stream_id, H3Code.H3_REQUEST_REJECTED)
            return
        outcome = self.begin(stream_id, headers, has_body)
        if isinstance(outcome, Refusal):
            self.listener.router.telemetry.request_refused(outcome.reason, self.peer_ip, self.loop_time())
            self.send_headers(stream_id, refusal_headers(outcome), False)
            self.send_data(stream_id, outcome.body, True)
            return
        self.disarm_idle()  # a refusal leaves the timer running: the connection may still be idle
        self.exchanges[stream_id] = outcome
        self.received[stream_id] = self.acked[stream_id] = 0
        outcome.start()

    def _data(self, stream_id: int, data: bytes, length: int | None) -> None:
        length = length or 0
        exchange = self.exchanges.get(stream_id)
        if exchange is None or exchange.finished:
            self._ack(stream_id, length)  # nobody takes it: keep the connection's window open
            return
        self.received[stream_id] += length
        exchange.client_data(data, False)

    def _body_ended(self, stream_id: int) -> None:
        self._ack_rest(stream_id)  # the stream's window no longer matters, the connection's does
        exchange = self.exchanges.get(stream_id)
        if exchange is not None and exchange.request.has_body and not exchange.body_ended:
            exchange.client_data(b"", True)

    def _stream_reset(self, stream_id: int) -> None:
        self.pending.pop(stream_id, None)
        self.ending.discard(stream_id)
        self._ack_rest(stream_id)
        exchange = self.exchanges.get(stream_id)
        if exchange is not None:
            exchange.client_reset()

    def _count_reset(self) -> None:
        """Spend one reset of the budget; a client over it (rapid reset) gets GOAWAY ENHANCE_YOUR_CALM and is closed."""
        if self.resets is None or self.resets.spend(asyncio.get_running_loop().time()) or self.transport is None:
            return
        log.info("tcp.h2_rapid_reset", peer=self.peer_ip, per_s=self.resets.per_s)
        self.closing = True
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.close_connection(error_code=ErrorCodes.ENHANCE_YOUR_CALM)
        self.flush()
        self._close()

    def _ack(self, stream_id: int, size: int) -> None:
        if size > 0:
            self.h2.acknowledge_received_data(size, stream_id)
            self.schedule()

    def _ack_rest(self, stream_id: int) -> None:
        received = self.received.get(stream_id, 0)
        self._ack(stream_id, received - self.acked.get(stream_id, 0))
        if stream_id in self.acked:
            self.acked[stream_id] = received

    # ClientStream for exchanges (the writes are `H2Sending`'s)
    def grant(self, stream_id: int, buffered: int) -> None:
        """Acknowledge the body bytes the upstream has taken, so the client may send as many more."""
        received = self.received.get(stream_id)
        if received is not None:
            drained = received - buffered - self.acked[stream_id]
            if drained > 0:
                self.acked[stream_id] += drained
                self._ack(stream_id, drained)

    def done(self, exchange: Exchange) -> None:
        stream_id = exchange.stream_id
        if self.exchanges.pop(stream_id, None) is None:
            return
        self._ack_rest(stream_id)
        self.received.pop(stream_id, None)
        self.acked.pop(stream_id, None)
        if exchange.request.has_body and not exchange.body_ended:
            self._stop_upload(stream_id)
        if not self.exchanges:
            self.arm_idle()
        self._maybe_goodbye()
