"""A small aioquic HTTP/3 client for the balancer tests: many concurrent requests on one connection."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset


@dataclass
class Response:
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    reset: bool = False

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


class _Client(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.pending: dict[int, tuple[Response, asyncio.Future[Response]]] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            pending, self.pending = self.pending, {}
            for _, future in pending.values():
                if not future.done():
                    future.set_exception(ConnectionError(f"connection closed: {event.reason_phrase}"))
        if isinstance(event, StreamReset) and event.stream_id in self.pending:
            response, future = self.pending.pop(event.stream_id)
            response.reset = True
            future.set_result(response)
        for http_event in self.http.handle_event(event):
            entry = self.pending.get(getattr(http_event, "stream_id", -1))
            if entry is None:
                continue
            response, future = entry
            if isinstance(http_event, HeadersReceived):
                headers = dict(http_event.headers)
                response.status = int(headers.pop(b":status", b"0"))
                response.headers.update(headers)
            elif isinstance(http_event, DataReceived):
                response.body += http_event.data
            if getattr(http_event, "stream_ended", False):
                self.pending.pop(getattr(http_event, "stream_id", -1))
                future.set_result(response)

    async def request(
        self, method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None, body: bytes | None = None,
        authority: str = "localhost",
    ) -> Response:
        stream_id = self._quic.get_next_available_stream_id()
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.pending[stream_id] = (Response(), future)
        fields = [(b":method", method.encode()), (b":scheme", b"https"), (b":authority", authority.encode()),
                  (b":path", path.encode()), *(headers or [])]
        self.http.send_headers(stream_id, fields, end_stream=body is None)
        if body is not None:
            self.http.send_data(stream_id, body, end_stream=True)
        self.transmit()
        return await asyncio.wait_for(future, 30)

    async def get(self, path: str = "/", headers: list[tuple[bytes, bytes]] | None = None) -> Response:
        return await self.request("GET", path, headers)


@asynccontextmanager
async def h3_client(port: int, host: str = "127.0.0.1") -> AsyncIterator[_Client]:
    """An HTTP/3 connection to the balancer (certificate not verified: dev certificate)."""
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE)
    async with connect(host, port, configuration=config, create_protocol=_Client) as client:
        yield client  # type: ignore[misc]
