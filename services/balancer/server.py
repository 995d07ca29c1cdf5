"""The client-facing HTTP/3 listener: aioquic's QUIC server, one `ClientProtocol` per connection.

`ProxyServer` adds what the balancer needs around aioquic's `QuicServer`: a socket bound with
SO_REUSEPORT (so several worker processes share the port), a connection limit, and QUIC Retry
either always or only while many handshakes are half-open (a spoofed-source flood).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import structlog
from aioquic._buffer import Buffer
from aioquic.asyncio.server import QuicServer
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import pull_quic_header

from services.balancer.client import ClientProtocol
from services.balancer.options import Limits
from services.balancer.router import Router
from services.balancer.sockets import grow_buffers

log = structlog.get_logger("balancer.server")


class ProxyServer(QuicServer):
    """aioquic's server plus limits, Retry policy and connection counts."""

    def __init__(self, *, router: Router, limits: Limits, **kwargs: Any) -> None:
        super().__init__(retry=True, create_protocol=ClientProtocol, **kwargs)
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
        if self.half_open < self.limits.retry_threshold and not _has_token(data, cid_length):
            self._retry = None  # type: ignore[assignment]
        try:
            super().datagram_received(data, addr)
        finally:
            self._retry = handler


def _has_token(data: bytes, cid_length: int) -> bool:
    """Whether an Initial packet carries a token (so it must be validated as a Retry token)."""
    try:
        header = pull_quic_header(Buffer(data=data), host_cid_length=cid_length)
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
    host: str, port: int, config: QuicConfiguration, router: Router, limits: Limits
) -> tuple[ProxyServer, int]:
    """Listen on UDP; returns the server and the bound port."""
    loop = asyncio.get_running_loop()
    sock = reuseport_socket(host, port)
    _, server = await loop.create_datagram_endpoint(
        lambda: ProxyServer(router=router, limits=limits, configuration=config), sock=sock
    )
    return server, sock.getsockname()[1]


def server_config(cert: str, key: str, idle_timeout_s: float, max_datagram_size: int) -> QuicConfiguration:
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN, idle_timeout=idle_timeout_s)
    config.max_datagram_size = max_datagram_size
    config.load_cert_chain(cert, key)
    return config
