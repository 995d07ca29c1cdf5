"""The client-facing HTTP/3 listener: the engine's QUIC server, one `ClientConnection` per connection.

`ProxyServer` adds what the balancer needs around the engine's `QuicServer`: a socket bound with
SO_REUSEPORT (so several worker processes share the port), a connection limit, and QUIC Retry
either always or only while many handshakes are half-open (a spoofed-source flood).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, ClassVar

import structlog

from services.balancer.client import ClientConnection
from services.balancer.options import Limits
from services.balancer.quic import Engine, ServerBase
from services.balancer.router import Router
from services.balancer.sockets import grow_buffers

log = structlog.get_logger("balancer.server")


class ProxyServer(ServerBase):
    """The engine's QUIC server plus limits, Retry policy and connection counts (a mixin: see `quic`)."""

    engine: ClassVar[Engine]

    def __init__(self, *, router: Router, limits: Limits, **kwargs: Any) -> None:
        protocol = self.engine.compose(ClientConnection, self.engine.QuicConnectionProtocol)
        super().__init__(retry=True, create_protocol=protocol, **kwargs)
        self.router = router
        self.limits = limits
        self.connections = 0
        self.half_open = 0

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
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
    engine: Engine, host: str, port: int, config: Any, router: Router, limits: Limits
) -> tuple[ProxyServer, int]:
    """Listen on UDP with `engine`; returns the server and the bound port."""
    loop = asyncio.get_running_loop()
    sock = reuseport_socket(host, port)
    listener = engine.compose(ProxyServer, engine.QuicServer)
    _, server = await loop.create_datagram_endpoint(
        lambda: listener(router=router, limits=limits, configuration=config), sock=sock
    )
    return server, sock.getsockname()[1]


def server_config(engine: Engine, cert: str, key: str, idle_timeout_s: float, max_datagram_size: int) -> Any:
    """The engine's QUIC server configuration for HTTP/3 with this certificate."""
    config = engine.QuicConfiguration(is_client=False, alpn_protocols=engine.H3_ALPN, idle_timeout=idle_timeout_s)
    engine.tuning.prepare(config)
    config.max_datagram_size = max_datagram_size
    config.load_cert_chain(cert, key)
    return config
