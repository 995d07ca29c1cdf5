"""What the HTTP/1.1 and HTTP/2 connections of the TCP listener share.

Each connection is an asyncio protocol and the `ClientStream` of its exchanges. The common part
is here: admission (the listener's `Admission`, the same door as QUIC's: a ticket held while the
connection lives, given back once), the idle timer (no request in flight for the listener's
`idle_timeout_s`, whatever else arrives: HTTP/2 PINGs do not re-arm it), request intake (so a TCP
request is refused and forwarded as an HTTP/3 one is), the `alt-svc` every answer carries, and
waking paused exchanges once the socket drained.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import Counter
from typing import ClassVar, Protocol, cast

from services.balancer.core.admission import Admission, Ticket
from services.balancer.core.headers import Headers
from services.balancer.core.intake import Refusal, intake
from services.balancer.core.options import Limits, ProxyOptions
from services.balancer.proxy.exchange import BACKLOG_HIGH, BACKLOG_LOW, Exchange
from services.balancer.proxy.ids import new_request_id
from services.balancer.proxy.router import Router


class Listener(Protocol):
    """What a connection needs from the listener that accepted it (see `listener.TcpListener`)."""

    router: Router
    limits: Limits
    options: dict[str, ProxyOptions]
    alt_svc: bytes
    idle_timeout_s: float
    admission: Admission
    requests: Counter[str]

    def opened(self, connection: TcpConnection) -> None: ...

    def closed(self, connection: TcpConnection) -> None: ...


def refusal_headers(refusal: Refusal) -> Headers:
    """The header block of the balancer's own answer to a request it does not forward."""
    return [(b":status", str(refusal.status).encode()), (b"content-type", b"text/plain"),
            (b"content-length", str(len(refusal.body)).encode())]


class TcpConnection(asyncio.Protocol, ABC):
    """One accepted TLS connection; subclasses speak HTTP/1.1 or HTTP/2 over it."""

    protocol: ClassVar[str]
    """`h1` or `h2`: the key of this protocol's options and request count."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.peer_ip = "unknown"
        self.watched: list[Exchange] = []
        self.closing = False
        """Shutting down: finish what is in flight, take nothing new, then close."""
        self.ticket: Ticket | None = None
        """This connection's place at the listener's admission (None: refused, or not yet made)."""
        self._idle: asyncio.TimerHandle | None = None
        self._holds: set[str] = set()

    # asyncio protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TLS transport is no asyncio.Transport subclass, though it has the same methods
        self.transport = transport = cast(asyncio.Transport, transport)
        listener = self.listener
        peer = transport.get_extra_info("peername")
        self.peer_ip = str(peer[0]) if peer else "unknown"
        entered = listener.admission.enter(self.peer_ip)
        if isinstance(entered, str):
            listener.router.telemetry.connection_refused(entered, self.peer_ip, asyncio.get_running_loop().time())
            transport.close()  # TLS is done: a close_notify costs no more than a reset and reads cleanly
            return
        self.ticket = entered
        listener.opened(self)
        # Paused exactly while an exchange may be paused (backlog above BACKLOG_HIGH), so
        # `resume_writing` comes once it drained below BACKLOG_LOW and can wake it.
        transport.set_write_buffer_limits(high=BACKLOG_HIGH, low=BACKLOG_LOW)
        self.started()
        self.arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm_idle()
        if self.ticket is not None and self.listener.admission.leave(self.ticket):
            self.listener.closed(self)
        self.lost()

    def resume_writing(self) -> None:
        self.drained()

    # shared helpers
    @staticmethod
    def loop_time() -> float:
        """The loop's clock, for rate-limited log lines."""
        return asyncio.get_running_loop().time()

    def begin(self, stream_id: int, headers: Headers, has_body: bool) -> Exchange | Refusal:
        """The exchange for a request's header block (not yet dispatched), or its refusal."""
        listener = self.listener
        options = listener.options[self.protocol]
        request = intake(headers, has_body, self.peer_ip, options, listener.limits.max_header_bytes, new_request_id())
        if isinstance(request, Refusal):
            return request
        listener.requests[self.protocol] += 1
        return Exchange(self, stream_id, request, self.peer_ip, listener.router, protocol=self.protocol)

    def with_alt_svc(self, headers: Headers) -> Headers:
        """`headers` advertising our HTTP/3 (a backend's own `alt-svc` would name its port, not ours)."""
        return [h for h in headers if h[0] != b"alt-svc"] + [(b"alt-svc", self.listener.alt_svc)]

    def drained(self) -> None:
        """Wake the exchanges that paused their upstream for this connection's backlog."""
        if self.watched:
            self.watched = [e for e in self.watched if not e.resume_if_drained()]

    def hold_reading(self, reason: str) -> None:
        """Stop reading the socket for `reason` (TCP then slows the client down)."""
        if not self._holds and self.transport is not None:
            self.transport.pause_reading()
        self._holds.add(reason)

    def release_reading(self, reason: str) -> None:
        if reason in self._holds:
            self._holds.discard(reason)
            if not self._holds and self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    def arm_idle(self) -> None:
        """Close a connection that carries no request for `idle_timeout_s` (re-armed only when a request ends)."""
        self.disarm_idle()
        if self.transport is not None and not self.transport.is_closing():
            loop = asyncio.get_running_loop()
            self._idle = loop.call_later(self.listener.idle_timeout_s, self.idle_expired)

    def disarm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    # ClientStream (the part both protocols answer alike)
    def watch(self, exchange: Exchange) -> None:
        self.watched.append(exchange)

    # what each protocol does
    @abstractmethod
    def started(self) -> None:
        """The connection was accepted (TLS done, under the limit)."""

    @abstractmethod
    def lost(self) -> None:
        """The socket is gone: end every exchange still on it."""

    @abstractmethod
    def idle_expired(self) -> None:
        """The idle timer fired."""

    @abstractmethod
    def shutdown(self) -> None:
        """Finish the requests in flight, accept no new one, then close."""

    @abstractmethod
    def send_headers(self, stream_id: int, headers: Headers, end: bool) -> None: ...

    @abstractmethod
    def send_data(self, stream_id: int, data: bytes, end: bool) -> None: ...

    @abstractmethod
    def reset(self, stream_id: int, code: int) -> None: ...

    @abstractmethod
    def grant(self, stream_id: int, buffered: int) -> None: ...

    @abstractmethod
    def backlog(self, stream_id: int) -> int: ...

    @abstractmethod
    def done(self, exchange: Exchange) -> None: ...
