"""A real HTTP/3 backend on loopback for tests: answers `Server Address: <ip>:<port>` like the template.

It mirrors the origin's nginx-quic backends (Alt-Svc and QUIC-Status headers) so the balancer and
the provisioner's readiness probe talk to something shaped like production, over real UDP.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated, QuicEvent

from shared.certs import ensure_dev_certificate


class _BackendProtocol(QuicConnectionProtocol):
    """Answers every request on its stream once the request ends."""

    server: H3Backend

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http: H3Connection | None = None
        self._paths: dict[int, str] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
            self._http = H3Connection(self._quic)
        if self._http is not None:
            for http_event in self._http.handle_event(event):
                self._http_event(http_event)

    def _http_event(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived):
            self._paths[event.stream_id] = dict(event.headers).get(b":path", b"/").decode()
            if event.stream_ended:
                self._answer(event.stream_id)
        elif isinstance(event, DataReceived) and event.stream_ended:
            self._answer(event.stream_id)

    def _answer(self, stream_id: int) -> None:
        gate = self.server.gate
        if gate is not None and not gate.is_set():
            self.server.held += 1
            asyncio.get_running_loop().create_task(self._answer_after(gate, stream_id))
            return
        self._respond(stream_id)

    async def _answer_after(self, gate: asyncio.Event, stream_id: int) -> None:
        await gate.wait()
        self._respond(stream_id)

    def _respond(self, stream_id: int) -> None:
        assert self._http is not None
        self.server.requests += 1
        self.server.paths.append(self._paths.pop(stream_id, "/"))
        body = f"Server Address: {self.server.address}\n".encode()
        headers = [
            (b":status", str(self.server.status).encode()),
            (b"content-type", b"text/plain"),
            (b"content-length", str(len(body)).encode()),
            (b"alt-svc", f'h3=":{self.server.port}"'.encode()),
            (b"quic-status", b"h3"),
        ]
        self._http.send_headers(stream_id, headers)
        self._http.send_data(stream_id, body, end_stream=True)
        self.transmit()


class H3Backend:
    """An aioquic HTTP/3 server on 127.0.0.1 (port 0 picks a free one). Use `async with`."""

    protocol: type[_BackendProtocol] = _BackendProtocol
    """How a connection answers; a subclass of the backend may answer otherwise (e.g. with more headers)."""

    def __init__(
        self, workdir: Path, host: str = "127.0.0.1", port: int = 0, status: int = 200,
        gate: asyncio.Event | None = None,
    ) -> None:
        """`gate`: when given, requests are answered only once it is set (`held` counts the waiting)."""
        self.workdir = workdir
        self.gate = gate
        self.held = 0
        self.host = host
        self.port = port
        self.status = status
        self.requests = 0
        self.paths: list[str] = []
        self._server: QuicServer | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        cert, key = ensure_dev_certificate(self.workdir)
        config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
        config.load_cert_chain(cert, key)
        backend = self

        class Protocol(self.protocol):  # type: ignore[misc,name-defined]  # a class chosen per backend
            server = backend

        self._server = await serve(self.host, self.port, configuration=config, create_protocol=Protocol)
        transport = self._server._transport
        assert transport is not None
        self.port = transport.get_extra_info("sockname")[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            await asyncio.sleep(0)

    async def __aenter__(self) -> H3Backend:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()
