"""The client-facing HTTP/3 listener: the engine's QUIC server, one `ClientConnection` per connection.

`ProxyServer` adds what the balancer needs around the engine's `QuicServer`: a socket bound with
SO_REUSEPORT (so several worker processes share the port), admission (`core.admission`: the
connection limits, shared with the TCP listener), and QUIC Retry either always or only while many
handshakes are half-open (a spoofed-source flood). Each engine module declares its `ProxyServer`
class with the `ClientConnection` class it creates (`protocol`).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any, ClassVar

import structlog

from services.balancer.core.admission import Admission
from services.balancer.core.options import Limits
from services.balancer.process.sockets import grow_buffers
from services.balancer.proxy.router import Router
from services.balancer.quic import Engine, Library, ServerBase
from services.balancer.quic.connection import ClientConnection
from services.balancer.steering.cid import Layout
from services.balancer.steering.steerer import Steerer, bind_steerer

log = structlog.get_logger("balancer.server")


class ProxyServer(ServerBase):
    """The engine's QUIC server plus admission, Retry policy and connection counts (a mixin: see `quic`)."""

    engine: ClassVar[Library]
    protocol: ClassVar[type[ClientConnection]]
    """The engine's declared client connection class."""

    def __init__(self, *, router: Router, limits: Limits, **kwargs: Any) -> None:
        super().__init__(retry=True, create_protocol=self.protocol, **kwargs)
        self.router = router
        self.limits = limits
        self.admission = Admission(limits)
        self.steering: Steerer | None = None
        self._all_closing: asyncio.Event | None = None
        if self._retry is not None:
            self._retry = CountingRetry(self._retry, router.telemetry.retry_sent)  # type: ignore[assignment]

    def steer(self, layout: Layout, sock: socket.socket) -> None:
        """Join connection-ID steering on this socket's port (see `steering`)."""
        self.steering = bind_steerer(layout, sock, self.accept, self.holds)

    @property
    def connections(self) -> int:
        """Connections admitted and not yet ended."""
        return self.admission.open

    @property
    def half_open(self) -> int:
        """Admitted connections whose handshake is not over."""
        return self.admission.half_open

    def holds(self, cid: bytes) -> bool:
        """Whether one of this process's connections answers to `cid`."""
        return cid in self._protocols

    def connections_open(self) -> list[ClientConnection]:
        return list(set(self._protocols.values()))  # type: ignore[arg-type]

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        """Steer first: a datagram for a sibling's connection goes there, the rest is ours."""
        if self.steering is not None and isinstance(data, bytes) and self.steering.route(data, addr):
            return
        self.accept(data, addr)

    def drain(self) -> None:
        """Stop taking new connections (siblings get them) and send GOAWAY on every connection."""
        if self.steering is not None:
            self.steering.drain()
        for connection in self.connections_open():
            connection.go_away()

    async def all_closing(self) -> None:
        """Return once every client connection is closing or gone (after `drain`, each closes when idle)."""
        self._all_closing = asyncio.Event()
        self.check_closing()
        await self._all_closing.wait()

    def check_closing(self) -> None:
        """A connection began to close: wake `all_closing` when it was the last open one."""
        if self._all_closing is not None and all(c.closing for c in self.connections_open()):
            self._all_closing.set()

    def use_configuration(self, config: Any) -> None:
        """New connections handshake with `config` (a reloaded certificate); open ones keep what they copied."""
        self._configuration = config

    def close(self) -> None:
        super().close()
        if self.steering is not None:
            self.steering.close()
            self.steering = None

    def accept(self, data: bytes | str, addr: Any) -> None:
        """Demand Retry only in `threshold` mode above the half-open limit (long-header packets only)."""
        if self.limits.retry_always or not (isinstance(data, bytes) and data and data[0] & 0x80):
            super().datagram_received(data, addr)
            return
        handler = self._retry
        cid_length = self._configuration.connection_id_length
        if self.half_open < self.limits.retry_threshold and not self._has_token(data, cid_length):
            self._retry = None  # type: ignore[assignment]
        try:
            super().datagram_received(data, addr)
        finally:
            self._retry = handler

    def _has_token(self, data: bytes, cid_length: int) -> bool:
        """Whether an Initial packet carries a token (so it must be validated as a Retry token)."""
        try:
            header = self.engine.pull_quic_header(self.engine.Buffer(data=data), host_cid_length=cid_length)
        except ValueError:
            return False
        return bool(header.token)


class CountingRetry:
    """The engine's Retry token handler, counting each token it makes (one per Retry packet sent)."""

    def __init__(self, handler: Any, counted: Callable[[], None]) -> None:
        self.handler, self.counted = handler, counted

    def create_token(self, *args: Any, **kwargs: Any) -> Any:
        self.counted()
        return self.handler.create_token(*args, **kwargs)

    def validate_token(self, *args: Any, **kwargs: Any) -> Any:
        return self.handler.validate_token(*args, **kwargs)


def reuseport_socket(host: str, port: int, buffer_bytes: int = 4 * 1024 * 1024) -> socket.socket:
    """A UDP socket bound with SO_REUSEPORT so worker processes share one port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    grow_buffers(sock, buffer_bytes)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


async def start_server(
    engine: Engine, host: str, port: int, config: Any, router: Router, limits: Limits, steering: Layout | None = None
) -> tuple[ProxyServer, int]:
    """Listen on UDP with `engine` (and join steering with `steering`'s layout); returns the server and the port."""
    loop = asyncio.get_running_loop()
    sock = reuseport_socket(host, port)
    listener: type[ProxyServer] = engine.Server
    _, server = await loop.create_datagram_endpoint(
        lambda: listener(router=router, limits=limits, configuration=config), sock=sock
    )
    if steering is not None:
        server.steer(steering, sock)
    return server, sock.getsockname()[1]


def server_config(engine: Engine, cert: str, key: str, idle_timeout_s: float, max_datagram_size: int) -> Any:
    """The engine's QUIC server configuration for HTTP/3 with this certificate."""
    config = engine.QuicConfiguration(is_client=False, alpn_protocols=engine.H3_ALPN, idle_timeout=idle_timeout_s)
    engine.tuning.prepare(config)
    config.max_datagram_size = max_datagram_size
    config.load_cert_chain(cert, key)
    return config
