"""A small aioquic HTTP/3 client for the balancer tests: many concurrent requests on one connection."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aioquic._buffer import Buffer, BufferReadError
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamDataReceived, StreamReset

SERVER_CONTROL_STREAM = 3
"""The first unidirectional stream a server opens: HTTP/3 servers open their control stream first."""


@dataclass
class Response:
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    reset: bool = False

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


class _H3(H3Connection):
    """aioquic's H3 layer, which skips GOAWAY's payload, plus a record of the GOAWAY the server sent.

    The server's control stream is read a second time here, frame by frame, for that one frame.
    """

    goaway: int | None = None
    goaway_seen: asyncio.Event
    control: bytearray

    def handle_event(self, event: QuicEvent) -> list[Any]:
        if isinstance(event, StreamDataReceived) and event.stream_id == SERVER_CONTROL_STREAM:
            self.control += event.data
            self._find_goaway()
        return super().handle_event(event)

    def _find_goaway(self) -> None:
        buf = Buffer(data=bytes(self.control))
        try:
            buf.pull_uint_var()  # the stream type (control)
            while not buf.eof():
                frame_type, length = buf.pull_uint_var(), buf.pull_uint_var()
                payload = buf.pull_bytes(length)
                if frame_type == FrameType.GOAWAY:
                    self.goaway = Buffer(data=payload).pull_uint_var()
                    self.goaway_seen.set()
        except BufferReadError:
            return


class _Client(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http = _H3(self._quic)
        self.http.goaway_seen = asyncio.Event()
        self.http.control = bytearray()
        self.pending: dict[int, tuple[Response, asyncio.Future[Response]]] = {}
        self.terminated = asyncio.Event()
        self.close_code: int | None = None

    @property
    def goaway(self) -> int | None:
        """The stream id of the server's GOAWAY, once one arrived."""
        return self.http.goaway

    async def rebind(self) -> int:
        """Move to a new UDP source port mid-connection (NAT rebinding); returns the new port."""
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", 0))
        old = self._transport
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: self, sock=sock)
        if old is not None:
            old.close()
        return int(sock.getsockname()[1])

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            self.close_code = event.error_code
            self.terminated.set()
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
                if not future.done():  # the caller may have given up on it (a timeout)
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
async def h3_client(port: int, host: str = "127.0.0.1", source: str | None = None) -> AsyncIterator[_Client]:
    """An HTTP/3 connection to the balancer (certificate not verified: dev certificate), from the loopback
    address `source` when given (aioquic's `connect` binds "::", so its clients all come from 127.0.0.1)."""
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE)
    if source is not None:
        async with _connect_from(source, host, port, config) as client:
            yield client
        return
    async with connect(host, port, configuration=config, create_protocol=_Client) as client:
        yield client  # type: ignore[misc]


@asynccontextmanager
async def _connect_from(source: str, host: str, port: int, config: QuicConfiguration) -> AsyncIterator[_Client]:
    config.server_name = config.server_name or host
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    transport, client = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Client(QuicConnection(configuration=config)), sock=sock
    )
    try:
        client.connect((host, port))
        await client.wait_connected()
        yield client
    finally:
        client.close()
        await client.wait_closed()
        transport.close()
