"""HTTP/3 upstream: one long-lived QUIC client connection per backend, many concurrent streams.

The UDP socket is connected to the backend, so an ICMP port-unreachable (the VM's server died)
fails the calls at once instead of after a QUIC timeout. A lost connection is re-opened on the
next request; requests that arrive while it is being opened wait for the handshake.

The connection and its request streams are `h3client`'s; this module is the per-backend upstream.
"""

from __future__ import annotations

import asyncio
import ssl

import structlog

from services.balancer.core.upstream import CONNECT, RESET, Sink, UpstreamRequest
from services.balancer.process.sockets import grow_buffers
from services.balancer.quic import Engine
from services.balancer.upstream.h3client import H3Call, H3Client, HeadSafeH3

__all__ = ["H3Call", "H3Client", "H3Upstream", "HeadSafeH3"]  # connection classes re-exported: engines import them here

log = structlog.get_logger("balancer.upstream.h3")

UPSTREAM_BUFFER_BYTES = 2 * 1024 * 1024
IDLE_TIMEOUT_S = 10.0
"""A connection that hears nothing for this long is closed (and re-opened on the next request):
a VM whose server restarted on the same port silently drops our old connection's packets."""


class H3Upstream:
    """The one QUIC connection to a backend, opened on demand and re-opened when lost."""

    def __init__(
        self, engine: Engine, host: str, port: int, connect_timeout_s: float, verify: bool, ack_delay_s: float,
        ca_file: str | None = None, server_name: str | None = None,
    ) -> None:
        """`ca_file` (PEM) replaces the system's CAs and turns verification on, as in `h1.client_tls`;
        `server_name` is the name sent and verified (None: the VM's address when verifying)."""
        self.engine = engine
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self.config = engine.QuicConfiguration(
            is_client=True, alpn_protocols=engine.H3_ALPN, idle_timeout=IDLE_TIMEOUT_S
        )
        verify = verify or ca_file is not None
        self.config.verify_mode = ssl.CERT_REQUIRED if verify else ssl.CERT_NONE
        self.config.cafile = ca_file
        self.config.server_name = server_name or (host if verify else None)
        self.config.max_datagram_size = 1350
        engine.tuning.prepare(self.config)
        self.ack_delay_s = ack_delay_s
        self.client: H3Client | None = None
        self.waiting: list[H3Call] = []
        self._task: asyncio.Task[None] | None = None

    def request(self, request: UpstreamRequest, sink: Sink) -> H3Call:
        call = H3Call(request, sink)
        client = self.client
        if client is not None and not client.dead and self.engine.tuning.is_closing(client._quic):
            client._die(RESET)  # closed by a timer since its last datagram (qh3 would raise on the next send)
        if client is not None and not client.dead and client.ready.done():
            call.attach(client)
            return call
        self.waiting.append(call)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._connect())
        return call

    async def _connect(self) -> None:
        try:
            self.client = await self._open()
            async with asyncio.timeout(self.connect_timeout_s):
                await asyncio.shield(self.client.ready)
        except (OSError, TimeoutError, ConnectionError) as error:
            log.debug("upstream.connect_failed", backend=f"{self.host}:{self.port}", error=str(error) or "timeout")
            if self.client is not None:
                self.client.close()
            self.client = None
            self._release(None)
        else:
            self._release(self.client)
        finally:
            self._task = None

    async def _open(self) -> H3Client:
        loop = asyncio.get_running_loop()
        engine = self.engine
        quic = engine.QuicConnection(configuration=self.config)
        engine.tuning.harden(quic)
        engine.tuning.set_ack_delay(quic, self.ack_delay_s)
        protocol: type[H3Client] = engine.UpstreamClient
        _, client = await loop.create_datagram_endpoint(lambda: protocol(quic), remote_addr=(self.host, self.port))
        sock = client._transport.get_extra_info("socket") if client._transport is not None else None
        if sock is not None:
            grow_buffers(sock, UPSTREAM_BUFFER_BYTES)
        client.connect((self.host, self.port))
        return client

    def _release(self, client: H3Client | None) -> None:
        waiting, self.waiting = self.waiting, []
        for call in waiting:
            if call.aborted:
                continue
            if client is None:
                call.sink.on_failed(CONNECT)
            else:
                call.attach(client)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.client is not None:
            self.client.close()
            self.client = None
