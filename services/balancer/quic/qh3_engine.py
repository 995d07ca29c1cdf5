"""The qh3 engine: aioquic's API on a Rust connection core (optional: `pip install quicfleet[qh3]`).

qh3's `QuicConnection` is a facade over a native core, so aioquic's private fields do not exist:
- ACK delay: the core decides (it advertises 25 ms as its maximum and piggybacks pending ACKs on
  the packets it sends); `set_ack_delay` reports that it cannot set it.
- `ack_with_next_packet`: nothing to do, for the same reason.
- Stream backlog: the public `get_send_buffer_size(stream_id)`, bytes not yet sent (aioquic's
  helper counts bytes not yet acknowledged; both bound what waits in the balancer).
- Request-body credit: the core grants credit as data arrives and offers no way to withhold it,
  so `stream_credit` is disabled and the exchange's hard bound on a buffered body applies.
- A server connection whose peer's address is not yet validated (no Retry) has its sends capped
  at three times what it received; qh3 2.x then raises "packet builder capacity exhausted" from
  `datagrams_to_send` and throws away the datagrams it had already built (every aioquic client
  triggers it on its first flights). `HardenedConnection` stops at the cap and keeps them.
- Field sections: qh3's Rust decoder has a decoded-size limit and its H3 layer an encoded one (both
  closing the connection, H3_EXCESSIVE_LOAD); they are set from the balancer's header limit as a
  backstop, under the same count before decoding that aioquic gets (`qpack.BoundedFields`: a 431).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qh3._hazmat import Buffer, QpackDecoder, encode_uint_var
from qh3.asyncio.protocol import QuicConnectionProtocol
from qh3.asyncio.server import QuicServer
from qh3.h3.connection import H3_ALPN, FrameType, H3Connection, ProtocolError, encode_frame
from qh3.h3.events import DataReceived, HeadersReceived
from qh3.h3.exceptions import H3Error
from qh3.quic.configuration import QuicConfiguration
from qh3.quic.connection import QuicConnection, QuicConnectionError
from qh3.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    ProtocolNegotiated,
    StopSendingReceived,
    StreamReset,
)
from qh3.quic.packet import pull_quic_header

from services.balancer.quic import Engine, Library, close_event_set, write_goaway
from services.balancer.quic.connection import ClientConnection
from services.balancer.quic.qpack import BoundedFields, safe_qpack
from services.balancer.quic.server import ProxyServer
from services.balancer.upstream.h3 import H3Client, HeadSafeH3

CAPPED = "packet builder capacity exhausted"


class HardenedConnection(QuicConnection):
    """qh3's connection, whose send loop stops at the anti-amplification cap instead of failing."""

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        if self._core is None:
            return []
        datagrams: list[tuple[bytes, Any]] = []
        while True:
            try:
                transmit = self._call_core(self._core.poll_transmit, now)
            except QuicConnectionError as error:
                if error.reason_phrase != CAPPED:
                    raise
                return datagrams  # the rest goes once the peer sent more (or proved its address)
            if transmit is None:
                return datagrams
            datagrams.append((transmit[0], transmit[1]))


class NoCredit:
    """Request-body credit that the engine keeps to itself (`enabled` False: callers bound instead)."""

    enabled = False

    def hold(self, stream_id: int) -> None:
        """Nothing to hold: the core grants credit itself."""

    def update(self, stream_id: int, buffered: int) -> bool:
        return False

    def release(self, stream_id: int) -> None:
        """Nothing was held."""


class Qh3Tuning:
    """The `Tuning` of qh3: public calls where the core has them, honest no-ops where not."""

    send_errors: tuple[type[Exception], ...] = (QuicConnectionError, ProtocolError)
    """qh3 raises on a write to a closed connection (aioquic drops it): a client that left; and the
    H3 layer's state errors (DATA after HEADERS that never went out)."""

    @staticmethod
    def set_ack_delay(quic: Any, seconds: float) -> bool:
        return False

    @staticmethod
    def limit_streams(quic: Any, count: int) -> bool:
        """The core advertises 100 concurrent request streams and cannot be told otherwise: a lower cap
        rejects the streams above it (H3_REQUEST_REJECTED), a higher one is held to 100."""
        return False

    @staticmethod
    def ack_with_next_packet(quic: Any, now: float) -> None:
        """The core puts pending ACKs on outgoing packets itself."""

    @staticmethod
    def stream_backlog(quic: Any, stream_id: int) -> int:
        try:
            return int(quic.get_send_buffer_size(stream_id))
        except (ValueError, RuntimeError):
            return 0

    @staticmethod
    def stream_credit(quic: Any, window: int) -> NoCredit:
        return NoCredit()

    safe_qpack = staticmethod(safe_qpack)

    closes_before_handshake = False
    """qh3's CONNECTION_CLOSE during the handshake does not reach an aioquic client."""

    @staticmethod
    def can_open_stream(quic: Any) -> bool:
        """Whether the peer's MAX_STREAMS (cumulative) admits another bidirectional stream: qh3
        raises instead of waiting, so callers queue."""
        try:
            return int(quic.get_next_available_stream_id()) // 4 < int(quic.max_concurrent_bidi_streams)
        except (AttributeError, ValueError):
            return True

    is_closing = staticmethod(close_event_set)

    @staticmethod
    def harden(quic: Any) -> None:
        """Give a connection qh3 made itself (a server's) the hardened send loop."""
        if type(quic) is QuicConnection:
            quic.__class__ = HardenedConnection

    @staticmethod
    def prepare(config: Any) -> None:
        """Offer DATAGRAM frames: qh3's H3 always advertises H3_DATAGRAM, which RFC 9297 ties to them."""
        if config.max_datagram_frame_size is None:
            config.max_datagram_frame_size = 65536

    @staticmethod
    def send_goaway(http: Any, stream_id: int) -> bool:
        """qh3 parses GOAWAY but offers no call to send one: write the frame on the control stream."""
        return write_goaway(http, stream_id, encode_frame(FrameType.GOAWAY, encode_uint_var(stream_id)))

    @staticmethod
    def own_cids(quic: Any, mint: Callable[[], bytes]) -> bool:
        """Only the first ID can be chosen: the core is made from `host_cid` at the first datagram and
        mints the later ones itself (steering then finds their owner by asking every sibling)."""
        if getattr(quic, "_core", None) is not None or not hasattr(quic, "host_cid"):
            return False
        quic.host_cid = mint()
        return True


# qh3's classes mirror aioquic's (the glue's types) without sharing them: the library is typed as Any here,
# and the declared classes below join a glue mixin typed against aioquic to a qh3 base.
LIBRARY = Library(**dict[str, Any](
    name="qh3", QuicConfiguration=QuicConfiguration, QuicConnection=HardenedConnection, QuicServer=QuicServer,
    QuicConnectionProtocol=QuicConnectionProtocol, H3Connection=H3Connection, H3_ALPN=H3_ALPN, H3Error=H3Error,
    HeadersReceived=HeadersReceived, DataReceived=DataReceived, ProtocolNegotiated=ProtocolNegotiated,
    HandshakeCompleted=HandshakeCompleted, StreamReset=StreamReset, StopSendingReceived=StopSendingReceived,
    ConnectionTerminated=ConnectionTerminated, Buffer=Buffer, pull_quic_header=pull_quic_header,
    tuning=Qh3Tuning(),
))


class Qh3ServerH3(BoundedFields, H3Connection):  # type: ignore[misc]
    """A client connection's HTTP/3 layer: the balancer's count first, qh3's own limits set to match behind it."""

    def new_decoder(self, capacity: int) -> Any:
        return QpackDecoder(capacity, 0, max_field_section_size=self.field_limit)

    def _init_connection(self) -> None:
        self._max_field_section_size = self.field_limit
        self._max_encoded_field_section_size = self.field_limit * 4 + 32  # qh3's own ratio (Huffman's worst)
        super()._init_connection()


class Qh3ClientConnection(ClientConnection, QuicConnectionProtocol):  # type: ignore[misc]
    """One client connection on qh3's protocol."""

    engine = LIBRARY
    h3 = Qh3ServerH3


class Qh3ProxyServer(ProxyServer, QuicServer):  # type: ignore[misc]
    """The client-facing listener on qh3's server."""

    engine = LIBRARY
    protocol = Qh3ClientConnection


class Qh3UpstreamH3(HeadSafeH3, H3Connection):  # type: ignore[misc]
    """An upstream connection's HTTP/3 layer (qh3 makes no HEAD length check, so the override stays idle)."""


class Qh3UpstreamClient(H3Client, QuicConnectionProtocol):  # type: ignore[misc]
    """A QUIC client connection to a VM on qh3's protocol."""

    engine = LIBRARY
    h3 = Qh3UpstreamH3


ENGINE = Engine(**vars(LIBRARY), Server=Qh3ProxyServer, UpstreamClient=Qh3UpstreamClient)
"""qh3, as the balancer uses it (what `load_engine("qh3")` returns)."""
