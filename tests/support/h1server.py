"""A real HTTP/1.1 keep-alive backend on loopback for tests, shaped like the template's backends.

It answers `Server Address: <ip>:<port>` on TCP and can take the port number of an `H3Backend`'s
UDP socket, as a real VM serves both on 443. A few paths help proxy tests: `/slow?ms=N` waits
before answering, `/big?bytes=N` streams a large body, and a POST echoes how many bytes it got.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from urllib.parse import parse_qs, urlsplit

import httptools


class _Connection(asyncio.Protocol):
    """One client connection; requests are answered in order (HTTP/1.1 has no multiplexing)."""

    def __init__(self, backend: H1Backend) -> None:
        self.backend = backend
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body = 0
        self.queue: asyncio.Queue[tuple[bytes, bytes, dict[bytes, bytes], int, bool]] = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._answer_loop())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.backend.connections.add(self)
        self.backend.accepted += 1
        sock = transport.get_extra_info("socket")
        if self.backend.rcvbuf is not None and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.backend.rcvbuf)

    def connection_lost(self, exc: Exception | None) -> None:
        self.backend.connections.discard(self)
        self.task.cancel()

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()
        if self.backend.stalled:
            self.transport.pause_reading()
            self.backend.stalled_connections.add(self)

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", {}, 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body += len(body)

    def on_message_complete(self) -> None:
        item = (self.parser.get_method(), self.url, self.headers, self.body, self.parser.should_keep_alive())
        self.queue.put_nowait(item)

    async def _answer_loop(self) -> None:
        while True:
            method, url, headers, body, keep = await self.queue.get()
            await self._answer(method, url.decode(), headers, body, keep)

    async def _answer(self, method: bytes, url: str, headers: dict[bytes, bytes], body: int, keep: bool) -> None:
        backend, transport = self.backend, self.transport
        assert transport is not None
        parts = urlsplit(url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        backend.requests += 1
        backend.paths.append(parts.path)
        backend.last_headers = headers
        if backend.mute:
            return  # a VM that died without a word: the request was read, nothing ever comes back
        if parts.path == "/slow":
            await asyncio.sleep(int(query.get("ms", "100")) / 1000)
        if parts.path == "/big":
            await self._send_big(int(query.get("bytes", "1000000")), keep)
            return
        text = f"received {body} bytes\n" if method == b"POST" else f"Server Address: {backend.address}\n"
        payload = text.encode()
        head = f"HTTP/1.1 {backend.status} OK\r\ncontent-type: text/plain\r\ncontent-length: {len(payload)}\r\n"
        head += "connection: keep-alive\r\n\r\n" if keep else "connection: close\r\n\r\n"
        transport.write(head.encode() + (b"" if method == b"HEAD" else payload))
        if not keep:
            transport.close()

    async def _send_big(self, size: int, keep: bool) -> None:
        """A chunked body sent in 64 KiB pieces, yielding between them."""
        transport = self.transport
        assert transport is not None
        transport.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: application/x-test\r\n\r\n")
        sent = 0
        while sent < size:
            piece = min(65536, size - sent)
            transport.write(b"%x\r\n" % piece + b"x" * piece + b"\r\n")
            sent += piece
            await asyncio.sleep(0)
        transport.write(b"0\r\n\r\n")
        if not keep:
            transport.close()


class H1Backend:
    """An HTTP/1.1 server on 127.0.0.1 (port 0 picks a free one). Use `async with`."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, status: int = 200, rcvbuf: int | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`tls`: serve TLS with this server context (a VM with a certificate)."""
        self.host = host
        self.tls = tls
        self.rcvbuf = rcvbuf
        """SO_RCVBUF of accepted sockets (small: the kernel absorbs less of a stalled upload)."""
        self.stalled = False
        """When set, connections stop reading after their next data, until `unstall()`."""
        self.stalled_connections: set[_Connection] = set()
        self.port = port
        self.status = status
        self.mute = False
        """When set, requests are read and never answered (no RST either), like a destroyed VM."""
        self.requests = 0
        self.accepted = 0
        self.paths: list[str] = []
        self.last_headers: dict[bytes, bytes] = {}
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def unstall(self) -> None:
        """Read again on every connection stopped by `stalled`."""
        self.stalled = False
        for conn in self.stalled_connections:
            if conn.transport is not None and not conn.transport.is_closing():
                conn.transport.resume_reading()
        self.stalled_connections.clear()

    def served(self, path: str = "/") -> int:
        """How many requests for `path` were answered (health checks use other paths)."""
        return sum(1 for p in self.paths if p == path)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, reuse_address=True, ssl=self.tls
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and cut every open connection (like a VM that died)."""
        if self._server is not None:
            self._server.close()
            for conn in list(self.connections):
                if conn.transport is not None:
                    conn.transport.abort()
            self._server = None

    async def __aenter__(self) -> H1Backend:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()
