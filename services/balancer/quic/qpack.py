"""QPACK both ways: responses every client can decode, and request field sections bounded before decoding.

Encoding (`NonBlockingEncoder`): no reference to a table entry the peer lacks.

Both engines' encoders (pylsqpack for aioquic, qh3's Rust one) honour the blocked-streams count
the peer advertised: they reference a dynamic-table entry in a response as soon as its insert is
queued on the encoder stream, trusting the peer to wait for it. nghttp3 (curl, h2load) counts
such a response as failed when its request stream ends before the insert arrives (measured: 21-28
of 1,000 through the balancer). Telling the encoder the peer takes no blocked streams makes it
reference only acknowledged entries: later responses still compress against the table, a first
one uses literals.

Decoding (`BoundedFields`): no field section over the header limit is ever decoded (see `core.fieldsize`).
"""

from __future__ import annotations

from typing import Any

from services.balancer.core.fieldsize import TableMirror, section_size
from services.balancer.quic import H3Base


class NonBlockingEncoder:
    """A QPACK encoder wrapper that applies the peer's settings with zero blocked streams."""

    __slots__ = ("_inner", "encode", "feed_decoder")

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.encode = inner.encode
        self.feed_decoder = inner.feed_decoder

    def apply_settings(self, max_table_capacity: int, blocked_streams: int, **more: int) -> bytes:
        """The peer's table capacity, but never a stream that could block on it."""
        del blocked_streams
        result: bytes = self._inner.apply_settings(max_table_capacity=max_table_capacity, blocked_streams=0, **more)
        return result


def safe_qpack(http: Any) -> bool:
    """Wrap an H3 connection's encoder (before the peer's SETTINGS); False when it has none."""
    inner = getattr(http, "_encoder", None)
    if inner is None or not hasattr(inner, "apply_settings"):
        return False
    http._encoder = NonBlockingEncoder(inner)
    return True


MAX_FIELD_SECTION_SIZE = 0x6
"""The HTTP/3 setting that tells a peer the largest field section it may send (RFC 9114 section 4.2.2)."""

REFUSED_REQUEST = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"refused.invalid"), (b":path", b"/")]
"""What a request whose field section was not decoded reads as to the H3 layer: a valid request head, so the
stream goes on; the connection answers it 431 (its id is in `BoundedFields.too_large`) and forwards nothing."""


def stream_cancellation(stream_id: int) -> bytes:
    """The QPACK decoder instruction that abandons a stream's field section (RFC 9204 section 4.4.2)."""
    if stream_id < 0x3F:
        return bytes([0x40 | stream_id])
    out, rest = bytearray([0x7F]), stream_id - 0x3F
    while rest >= 0x80:
        out.append((rest & 0x7F) | 0x80)
        rest >>= 7
    out.append(rest)
    return bytes(out)


class MirroredDecoder:
    """An engine's QPACK decoder whose encoder-stream input also feeds a `TableMirror`."""

    def __init__(self, inner: Any, table: TableMirror) -> None:
        self._inner, self.table = inner, table

    def feed_encoder(self, data: bytes) -> Any:
        result = self._inner.feed_encoder(data)
        self.table.feed(data)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class BoundedFields(H3Base):
    """The server's H3 connection with a field-section limit (a mixin: each engine declares its class).

    It advertises SETTINGS_MAX_FIELD_SECTION_SIZE equal to the balancer's header limit, takes no
    blocked streams (so every section can be sized when it arrives: the client references only entries
    it knows we have), and reads each section's size before decoding it (`fieldsize`): one whose
    encoded or decoded size is over the limit is never decoded; its stream reads as `REFUSED_REQUEST`
    and its id goes into `too_large`, for the connection to answer 431.
    """

    def __init__(self, quic: Any, max_field_section: int) -> None:
        self.field_limit = max_field_section
        self.too_large: set[int] = set()
        self.table = TableMirror(0)
        super().__init__(quic)

    def new_decoder(self, capacity: int) -> Any:
        """The engine's QPACK decoder with this table capacity and no blocked streams (see the engine class)."""
        raise NotImplementedError

    def _init_connection(self) -> None:
        """Runs at the end of the engine's `__init__`, before SETTINGS go out and before anything arrives."""
        self._blocked_streams = 0
        self.table = TableMirror(self._max_table_capacity)
        self._decoder = MirroredDecoder(self.new_decoder(self._max_table_capacity), self.table)  # type: ignore[assignment]
        super()._init_connection()

    def _get_local_settings(self) -> dict[int, int]:
        settings = super()._get_local_settings()
        settings[MAX_FIELD_SECTION_SIZE] = self.field_limit
        return settings

    def _decode_headers(self, stream_id: int, frame_data: bytes | None, **where: Any) -> Any:
        if frame_data is not None:
            start = where.get("offset", 0)
            length = where.get("length")
            block = frame_data[start:] if length is None else frame_data[start:start + length]
            limit = self.field_limit
            if len(block) > limit or section_size(block, self.table, limit) > limit:
                return self._refuse_section(stream_id, block)
        return super()._decode_headers(stream_id, frame_data, **where)

    def _refuse_section(self, stream_id: int, block: bytes) -> Any:
        """Skip a section over the limit: tell the peer's encoder we abandoned it, and stand in a request head."""
        decoder_stream = self._local_decoder_stream_id
        if block[:1] not in (b"", b"\x00") and decoder_stream is not None:  # it referenced the table: release it
            self._quic.send_stream_data(decoder_stream, stream_cancellation(stream_id))
        stream = self._stream.get(stream_id)
        if stream is not None and stream.headers_recv_state.name != "INITIAL":
            return []  # trailers: nobody reads them
        self.too_large.add(stream_id)
        return list(REFUSED_REQUEST)
