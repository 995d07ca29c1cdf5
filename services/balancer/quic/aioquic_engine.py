"""The aioquic engine: its classes, and the few aioquic internals the balancer tunes.

aioquic has no public knob for its ACK delay (it waits up to 1 ms before acknowledging, which
adds that much to every one-in-flight exchange for clients that wait for the ACK), no way to
put a pending ACK on an outgoing packet early, and no accessor for a stream's unacknowledged
backlog (needed for response backpressure), and no way to withhold a stream's receive credit
(needed for request-body backpressure). All read or set private fields, so
they live here, guarded, and fall back to doing nothing if a future aioquic renames them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pylsqpack
from aioquic import tls
from aioquic._buffer import Buffer
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection, ProtocolError, encode_frame
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.h3.exceptions import H3Error
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import MAX_STREAM_DATA_FRAME_CAPACITY, QuicConnection, QuicConnectionId
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    ProtocolNegotiated,
    StopSendingReceived,
    StreamReset,
)
from aioquic.quic.packet import QuicFrameType, pull_quic_header

from services.balancer.quic import Engine, Library, close_event_set, write_goaway
from services.balancer.quic.connection import ClientConnection
from services.balancer.quic.qpack import BoundedFields, safe_qpack
from services.balancer.quic.server import ProxyServer
from services.balancer.upstream.h3 import H3Client, HeadSafeH3


def set_ack_delay(quic: QuicConnection, seconds: float) -> bool:
    """Set how long the connection may delay an ACK; False when this aioquic lacks the field."""
    if not hasattr(quic, "_ack_delay"):
        return False
    quic._ack_delay = seconds
    return True


def ack_with_next_packet(quic: QuicConnection, now: float) -> None:
    """Make a pending (delayed) ACK due now, so the packet about to be sent carries it.

    aioquic writes an ACK frame only once its delay expired, so a response sent within the
    delay leaves without one and a separate ACK-only packet follows later. Called just before
    sending a response, this puts the ACK on the response: one packet fewer per request, and
    the client learns at once that its request arrived.
    """
    spaces: dict[Any, Any] = getattr(quic, "_spaces", {})
    space = spaces.get(tls.Epoch.ONE_RTT)
    if space is not None and space.ack_at is not None and space.ack_at > now:
        space.ack_at = now


def stream_backlog(quic: QuicConnection, stream_id: int) -> int:
    """Bytes queued on a stream but not yet acknowledged by the peer (0 when unknown)."""
    streams: dict[int, Any] = getattr(quic, "_streams", {})
    stream = streams.get(stream_id)
    if stream is None:
        return 0
    buffer = getattr(stream.sender, "_buffer", b"")
    return len(buffer)


class StreamCredit:
    """Request-body flow control: a stream's receive credit follows what the upstream drained.

    aioquic doubles a stream's MAX_STREAM_DATA whenever the peer used half of it, i.e. as data
    arrives, whether or not anyone consumed it; a fast uploader to a slow VM would then be
    buffered in the balancer without limit. For streams registered here the credit is instead
    `received - still_buffered + window`, so at most `window` bytes of a body wait in the
    balancer. This replaces aioquic's private `_write_stream_limits` on one connection while it has
    held streams (it runs for every stream on every packet, so not longer than needed); when that
    method is missing (`enabled` False) nothing is replaced and callers fall back to a hard bound.
    """

    def __init__(self, quic: QuicConnection, window: int) -> None:
        self.window = window
        self.caps: dict[int, int] = {}
        self._streams: dict[int, Any] = getattr(quic, "_streams", {})
        self._original = getattr(quic, "_write_stream_limits", None)
        self._on_delivery = getattr(quic, "_on_max_stream_data_delivery", None)
        self.enabled = self._original is not None and self._on_delivery is not None
        self._quic = quic

    def hold(self, stream_id: int) -> None:
        """Take over a stream's credit (call when a request with a body starts)."""
        stream = self._streams.get(stream_id)
        if self.enabled and stream is not None:
            if not self.caps:
                self._quic._write_stream_limits = self._write_limits  # type: ignore[method-assign]
            self.caps[stream_id] = stream.max_stream_data_local

    def update(self, stream_id: int, buffered: int) -> bool:
        """Grant credit for what was drained; True when a MAX_STREAM_DATA is now due.

        Credit is raised only by at least a quarter window at a time, so a fast upstream costs
        one MAX_STREAM_DATA frame per quarter window, not one per packet.
        """
        cap = self.caps.get(stream_id)
        stream = self._streams.get(stream_id)
        if cap is None or stream is None:
            return False
        wanted = stream.receiver.highest_offset - buffered + self.window
        if wanted < cap + self.window // 4:
            return False
        self.caps[stream_id] = wanted
        return True

    def release(self, stream_id: int) -> None:
        if self.caps.pop(stream_id, None) is not None and not self.caps:
            del self._quic._write_stream_limits  # the class's own method applies again

    def _write_limits(self, builder: Any, space: Any, stream: Any) -> None:
        cap = self.caps.get(stream.stream_id)
        if cap is None:
            self._original(builder=builder, space=space, stream=stream)  # type: ignore[misc]
            return
        stream.max_stream_data_local = max(stream.max_stream_data_local, cap)
        if stream.max_stream_data_local_sent == stream.max_stream_data_local:
            return
        buf = builder.start_frame(
            QuicFrameType.MAX_STREAM_DATA, capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
            handler=self._on_delivery, handler_args=(stream,),
        )
        buf.push_uint_var(stream.stream_id)
        buf.push_uint_var(stream.max_stream_data_local)
        stream.max_stream_data_local_sent = stream.max_stream_data_local


def limit_streams(quic: Any, count: int) -> bool:
    """Let the client open at most `count` request streams at once (QUIC's MAX_STREAMS, advertised in the
    handshake and raised by one as each stream ends): past the balancer's cap it waits for credit instead
    of opening streams only to have them rejected, which a flood turns into a busy loop of opens and
    resets. aioquic fixes 128 in `__init__`; False when this aioquic lacks the field."""
    limit = getattr(quic, "_local_max_streams_bidi", None)
    if limit is None or not hasattr(limit, "sent"):
        return False
    limit.value = limit.sent = count
    return True


def own_cids(quic: Any, mint: Callable[[], bytes]) -> bool:
    """Make every connection ID the connection issues come from `mint` (steering's IDs name their owner).

    aioquic draws its first ID in `__init__` and the later ones in `_replenish_connection_ids`,
    both with os.urandom; the first is swapped before any packet is sent and the other is
    replaced on the instance. False (nothing changed) when this aioquic lacks those fields.
    """
    first = getattr(quic, "_host_cids", None)
    if not first or not hasattr(quic, "_replenish_connection_ids") or not hasattr(quic, "_host_cid_seq"):
        return False
    first[0].cid = quic.host_cid = quic._local_initial_source_connection_id = mint()

    def replenish() -> None:
        while len(quic._host_cids) < min(8, quic._remote_active_connection_id_limit):
            cid = QuicConnectionId(cid=mint(), sequence_number=quic._host_cid_seq, stateless_reset_token=os.urandom(16))
            quic._host_cids.append(cid)
            quic._host_cid_seq += 1

    quic._replenish_connection_ids = replenish
    return True


class AioquicTuning:
    """The `Tuning` of aioquic: the guarded private-field helpers above."""

    send_errors: tuple[type[Exception], ...] = (ProtocolError,)
    """aioquic drops writes to a closed connection; its H3 layer raises its state errors (DATA on a
    stream whose HEADERS never went out)."""

    set_ack_delay = staticmethod(set_ack_delay)
    ack_with_next_packet = staticmethod(ack_with_next_packet)
    stream_backlog = staticmethod(stream_backlog)
    stream_credit = staticmethod(StreamCredit)
    limit_streams = staticmethod(limit_streams)
    safe_qpack = staticmethod(safe_qpack)

    closes_before_handshake = True
    """aioquic closes a connection during its handshake cleanly."""

    @staticmethod
    def can_open_stream(quic: Any) -> bool:
        """aioquic queues a stream beyond the peer's limit itself (and opens it on MAX_STREAMS)."""
        return True

    is_closing = staticmethod(close_event_set)

    @staticmethod
    def harden(quic: Any) -> None:
        """Skip PADDING in one step: aioquic walks it byte by byte in Python (~200 us a padded packet)."""
        skip_padding_at_once(quic)

    @staticmethod
    def prepare(config: Any) -> None:
        """Nothing to add: aioquic's defaults fit the balancer."""

    @staticmethod
    def send_goaway(http: Any, stream_id: int) -> bool:
        """aioquic's H3 layer has no GOAWAY call: write the frame on its control stream."""
        return write_goaway(http, stream_id, encode_frame(FrameType.GOAWAY, encode_uint_var(stream_id)))

    own_cids = staticmethod(own_cids)


def skip_padding_at_once(quic: QuicConnection) -> bool:
    """Replace the connection's PADDING handler with one that skips the zero bytes with one strip.

    aioquic's handler loops over every zero byte; a full-size padded datagram then costs more than
    the request it carries. Frame handlers live in a private table built in `__init__`; when that
    table is missing (another aioquic) or qlog tracing is on, nothing is changed.
    """
    handlers: dict[int, Any] | None = getattr(quic, "_QuicConnection__frame_handlers", None)
    if not handlers or 0x00 not in handlers or getattr(quic, "_quic_logger", None) is not None:
        return False

    def padding(context: Any, frame_type: int, buf: Buffer) -> None:
        pos = buf.tell()
        rest = buf.data_slice(pos, buf.capacity)
        buf.seek(pos + len(rest) - len(rest.lstrip(b"\x00")))

    handlers[0x00] = (padding, handlers[0x00][1])
    return True



LIBRARY = Library(
    name="aioquic", QuicConfiguration=QuicConfiguration, QuicConnection=QuicConnection, QuicServer=QuicServer,
    QuicConnectionProtocol=QuicConnectionProtocol, H3Connection=H3Connection, H3_ALPN=H3_ALPN, H3Error=H3Error,
    HeadersReceived=HeadersReceived, DataReceived=DataReceived, ProtocolNegotiated=ProtocolNegotiated,
    HandshakeCompleted=HandshakeCompleted, StreamReset=StreamReset, StopSendingReceived=StopSendingReceived,
    ConnectionTerminated=ConnectionTerminated, Buffer=Buffer, pull_quic_header=pull_quic_header,
    tuning=AioquicTuning(),
)


# The balancer's classes on aioquic: each is a glue mixin on the aioquic class it extends.


class AioquicServerH3(BoundedFields, H3Connection):
    """A client connection's HTTP/3 layer: field sections bounded before pylsqpack decodes them."""

    def new_decoder(self, capacity: int) -> Any:
        return pylsqpack.Decoder(capacity, 0)


class AioquicClientConnection(ClientConnection, QuicConnectionProtocol):
    """One client connection on aioquic's protocol."""

    engine = LIBRARY
    h3 = AioquicServerH3


class AioquicProxyServer(ProxyServer, QuicServer):
    """The client-facing listener on aioquic's server."""

    engine = LIBRARY
    protocol = AioquicClientConnection


class AioquicUpstreamH3(HeadSafeH3, H3Connection):
    """An upstream connection's HTTP/3 layer, taking HEAD responses as they are."""


class AioquicUpstreamClient(H3Client, QuicConnectionProtocol):
    """A QUIC client connection to a VM on aioquic's protocol."""

    engine = LIBRARY
    h3 = AioquicUpstreamH3


ENGINE = Engine(**vars(LIBRARY), Server=AioquicProxyServer, UpstreamClient=AioquicUpstreamClient)
"""aioquic, as the balancer uses it (what `load_engine("aioquic")` returns)."""
