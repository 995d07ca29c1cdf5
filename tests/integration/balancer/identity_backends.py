"""The test backends, plus an `x-quicfleet-vm` response header whose value a test picks (and may change).

They behave as `tests.support`'s H1Backend and H3Backend do, so a VM that proves its identity
and an impostor at its address are both real servers on loopback; `identity = None` sends no
header, like a machine that knows nothing of quicfleet.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

from shared.contract.base import IDENTITY_HEADER
from tests.support import h1server, h3server

HEADER = IDENTITY_HEADER.encode()


class _H1Connection(h1server._Connection):
    """Answers the plain `Server Address` request itself, with the header; other paths as before."""

    backend: IdentityH1Backend

    async def _answer(self, method: bytes, url: str, headers: dict[bytes, bytes], body: int, keep: bool) -> None:
        backend, transport, path = self.backend, self.transport, urlsplit(url).path
        if backend.mute or method != b"GET" or path in ("/slow", "/big"):
            await super()._answer(method, url, headers, body, keep)
            return
        assert transport is not None
        backend.requests += 1
        backend.paths.append(path)
        backend.last_headers = headers
        payload = f"Server Address: {backend.address}\n".encode()
        head = [f"HTTP/1.1 {backend.status} OK", "content-type: text/plain", f"content-length: {len(payload)}"]
        if backend.identity is not None:
            head.append(f"{IDENTITY_HEADER}: {backend.identity}")
        head.append("connection: keep-alive" if keep else "connection: close")
        transport.write("\r\n".join(head).encode() + b"\r\n\r\n" + payload)
        if not keep:
            transport.close()


class IdentityH1Backend(h1server.H1Backend):
    """An HTTP/1.1 backend that sends `identity` (when set) in `x-quicfleet-vm` on its GET answers."""

    def __init__(self, identity: str | None) -> None:
        super().__init__()
        self.identity = identity

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _H1Connection(self), self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]


class _H3Protocol(h3server._BackendProtocol):
    """Answers as the plain backend does, with the header added."""

    server: IdentityH3Backend

    def _respond(self, stream_id: int) -> None:
        assert self._http is not None
        server = self.server
        server.requests += 1
        server.paths.append(self._paths.pop(stream_id, "/"))
        body = f"Server Address: {server.address}\n".encode()
        headers = [(b":status", str(server.status).encode()), (b"content-length", str(len(body)).encode())]
        if server.identity is not None:
            headers.append((HEADER, server.identity.encode()))
        self._http.send_headers(stream_id, headers)
        self._http.send_data(stream_id, body, end_stream=True)
        self.transmit()


class IdentityH3Backend(h3server.H3Backend):
    """An HTTP/3 backend that sends `identity` (when set) in `x-quicfleet-vm` on every answer."""

    protocol = _H3Protocol

    def __init__(self, workdir: Path, identity: str | None) -> None:
        super().__init__(workdir)
        self.identity = identity

