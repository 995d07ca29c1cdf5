"""The QUIC engine seam: every line of the balancer that depends on the QUIC library is here.

Two engines run the same balancer: aioquic (the default, pure Python) and qh3 (a fork of aioquic
with the same module layout whose connection core, TLS, crypto and QPACK are in Rust). The
balancer's glue (listener, client connections, HTTP/3 upstreams) is written once, as mixins typed
against aioquic; each engine module (`aioquic_engine`, `qh3_engine`) declares the balancer's
classes on its library in plain `class` statements (`class AioquicClientConnection(ClientConnection,
QuicConnectionProtocol)`), and `load_engine` only chooses between the declared sets. A glue class
reaches its library's events, errors and tuning through its `engine` (a `Library`). What each engine
can tune (ACK timing, stream backlog, request-body credit) is its `Tuning`; where an engine cannot do
something, its tuning says so (`False`, `enabled`) and the glue falls back, never breaks. qh3 is
imported only when chosen.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Literal, Protocol

EngineName = Literal["aioquic", "qh3"]
ENGINES: tuple[EngineName, ...] = ("aioquic", "qh3")

if TYPE_CHECKING:  # the glue is type-checked against aioquic; at run time a mixin's base is the engine's
    from aioquic.asyncio.protocol import QuicConnectionProtocol as ProtocolBase
    from aioquic.asyncio.server import QuicServer as ServerBase
    from aioquic.h3 import events as h3_events
    from aioquic.h3.connection import H3Connection as H3Base
    from aioquic.quic import events as quic_events
else:
    ProtocolBase = ServerBase = H3Base = object


class H3Code(IntEnum):
    """HTTP/3 and QUIC error codes the balancer sends (RFC 9114 section 8.1, RFC 9000 section 20)."""

    CONNECTION_REFUSED = 0x2
    H3_NO_ERROR = 0x100
    H3_INTERNAL_ERROR = 0x102
    H3_EXCESSIVE_LOAD = 0x107
    H3_REQUEST_REJECTED = 0x10B
    H3_REQUEST_CANCELLED = 0x10C


class Credit(Protocol):
    """Request-body flow control of one connection (see `aioquic_engine.StreamCredit`)."""

    enabled: bool

    def hold(self, stream_id: int) -> None: ...

    def update(self, stream_id: int, buffered: int) -> bool: ...

    def release(self, stream_id: int) -> None: ...


class Tuning(Protocol):
    """What the balancer tunes in an engine; each call is safe when the engine cannot do it."""

    closes_before_handshake: bool
    send_errors: tuple[type[Exception], ...]

    def set_ack_delay(self, quic: Any, seconds: float) -> bool: ...

    def ack_with_next_packet(self, quic: Any, now: float) -> None: ...

    def stream_backlog(self, quic: Any, stream_id: int) -> int: ...

    def stream_credit(self, quic: Any, window: int) -> Credit: ...

    def limit_streams(self, quic: Any, count: int) -> bool: ...

    def safe_qpack(self, http: Any) -> bool: ...

    def prepare(self, config: Any) -> None: ...

    def harden(self, quic: Any) -> None: ...

    def is_closing(self, quic: Any) -> bool: ...

    def can_open_stream(self, quic: Any) -> bool: ...

    def send_goaway(self, http: Any, stream_id: int) -> bool: ...

    def own_cids(self, quic: Any, mint: Callable[[], bytes]) -> bool: ...


@dataclass(frozen=True)
class Library:
    """One QUIC library's own classes, events and errors, and its tuning, as the balancer's glue uses them."""

    name: EngineName
    QuicConfiguration: Any
    QuicConnection: Any
    QuicServer: Any
    QuicConnectionProtocol: Any
    H3Connection: Any
    H3_ALPN: list[str]
    H3Error: type[Exception]
    HeadersReceived: type[h3_events.HeadersReceived]
    DataReceived: type[h3_events.DataReceived]
    ProtocolNegotiated: type[quic_events.ProtocolNegotiated]
    HandshakeCompleted: type[quic_events.HandshakeCompleted]
    StreamReset: type[quic_events.StreamReset]
    StopSendingReceived: type[quic_events.StopSendingReceived]
    ConnectionTerminated: type[quic_events.ConnectionTerminated]
    Buffer: Any
    pull_quic_header: Callable[..., Any]
    tuning: Tuning


@dataclass(frozen=True)
class Engine(Library):
    """A library plus the balancer's classes its engine module declares on it: what the seam hands out.

    The classes are typed loosely here because this package is what the glue imports (naming the glue
    would close an import circle); each is a plain `class` statement in its engine module.
    """

    Server: type[Any]
    """The client-facing listener: a `server.ProxyServer` (e.g. `aioquic_engine.AioquicProxyServer`)."""
    UpstreamClient: type[Any]
    """A QUIC client connection to a VM: an `upstream.h3client.H3Client` (`aioquic_engine.AioquicUpstreamClient`)."""


__all__ = ["ENGINES", "Credit", "Engine", "EngineName", "H3Base", "H3Code", "Library", "ProtocolBase", "ServerBase",
           "Tuning", "close_event_set", "load_engine", "write_goaway"]


def close_event_set(quic: Any) -> bool:
    """Whether a connection is closing or closed: both engines set `_close_event` at once, and report
    the close (ConnectionTerminated) only after the draining period."""
    return getattr(quic, "_close_event", None) is not None


def write_goaway(http: Any, stream_id: int, frame: bytes) -> bool:
    """Send an encoded GOAWAY frame on an H3 connection's control stream (both engines name it alike)."""
    control = getattr(http, "_local_control_stream_id", None)
    if control is None:
        return False
    http._quic.send_stream_data(control, frame)
    return True


_loaded: dict[str, Engine] = {}


def load_engine(name: EngineName = "aioquic") -> Engine:
    """The named engine (its library imported on first use, so qh3 is needed only when chosen)."""
    if name not in ENGINES:
        raise ValueError(f"unknown QUIC engine {name!r}; known: {', '.join(ENGINES)}")
    if name not in _loaded:
        module = importlib.import_module(f"services.balancer.quic.{name}_engine")
        _loaded[name] = module.ENGINE
    return _loaded[name]
