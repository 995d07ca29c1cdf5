"""A raw recording HTTP/1.1 backend: it keeps the exact bytes each connection sent, and answers each request.

The smuggling tests assert on what a VM would have received, byte for byte, so the backend must not
normalise anything: it stores the bytes as they arrive, and answers with a fixed 200 each time a
lenient parser (httptools, the C parser node and uvicorn use) sees a request end, so a split or
smuggled request would be answered and recorded like a real one. `requests()` reads the recording
back strictly (h11) for the assertions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import h11
import httptools

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 9\r\n\r\nrecorded\n"
HEALTH_PATH = b"/healthz"


@dataclass
class Recorded:
    """One request read back strictly from a connection's bytes."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    head: bytes
    """The raw request line and header block, as received."""

    def values(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n == name]


class _Connection(asyncio.Protocol):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.received = bytearray()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.recorder.connections.append(self.received)

    def data_received(self, data: bytes) -> None:
        self.received += data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_complete(self) -> None:
        if self.transport is not None:
            self.transport.write(ANSWER)


class Recorder:
    """The backend's listening socket and every connection's bytes, in order of arrival."""

    def __init__(self) -> None:
        self.connections: list[bytearray] = []
        self.server: asyncio.Server | None = None
        self.address = ""

    def clear(self) -> None:
        """Forget what was recorded (kept-alive connections record into fresh buffers from now on)."""
        for received in self.connections:
            received.clear()

    def raw(self) -> bytes:
        return b"".join(bytes(c) for c in self.connections)

    def requests(self) -> list[Recorded]:
        """Every request of every connection, read strictly; an unparsable or trailing byte raises."""
        found: list[Recorded] = []
        for received in self.connections:
            found += _read_all(bytes(received))
        return [r for r in found if r.target != HEALTH_PATH]


def _read_all(data: bytes) -> list[Recorded]:
    """The requests in one connection's bytes, strictly: h11 must read every byte as part of a request."""
    found: list[Recorded] = []
    while data:
        server = h11.Connection(h11.SERVER)
        server.receive_data(data)
        head = server.next_event()
        if not isinstance(head, h11.Request):
            raise AssertionError(f"bytes that are no complete request: {data[:200]!r}")
        body = b""
        while not isinstance(event := server.next_event(), h11.EndOfMessage):
            if not isinstance(event, h11.Data):
                raise AssertionError(f"a request whose body never ends: {data[:200]!r}")
            body += event.data
        rest = server.trailing_data[0]
        raw_head = data[: data.index(b"\r\n\r\n") + 4]
        found.append(Recorded(bytes(head.method), bytes(head.target),
                              [(bytes(n), bytes(v)) for n, v in head.headers], body, raw_head))
        data = rest
    return found


@asynccontextmanager
async def recording_backend() -> AsyncIterator[Recorder]:
    """A Recorder listening on 127.0.0.1 (a free port), closed on exit."""
    recorder = Recorder()
    loop = asyncio.get_running_loop()
    recorder.server = await loop.create_server(lambda: _Connection(recorder), "127.0.0.1", 0)
    port = recorder.server.sockets[0].getsockname()[1]
    recorder.address = f"127.0.0.1:{port}"
    try:
        yield recorder
    finally:
        recorder.server.close()
