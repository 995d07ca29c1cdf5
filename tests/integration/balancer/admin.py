"""Helpers of the admin-port and certificate tests: a TLS HTTP/1.1 connection that stays open, and probes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import ssl
from typing import Any

import aiohttp


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """GET `path` on the admin port: its status and JSON body."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.json()


class Http1:
    """One keep-alive HTTP/1.1 connection over TLS to the balancer's TCP port (no verification)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Http1:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        context.set_alpn_protocols(["http/1.1"])
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        return cls(reader, writer)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the certificate the balancer presented on this connection."""
        ssl_object = self.writer.get_extra_info("ssl_object")
        return hashlib.sha256(ssl_object.getpeercert(binary_form=True)).hexdigest()

    def send(self, path: str = "/") -> None:
        self.writer.write(f"GET {path} HTTP/1.1\r\nhost: example.org\r\nuser-agent: admin-test\r\n\r\n".encode())

    async def response(self, timeout: float = 20.0) -> tuple[int, bytes]:
        """The next response's status and body (content-length framed, as the balancer sends it)."""
        async with asyncio.timeout(timeout):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
            return int(lines[0].split()[1]), await self.reader.readexactly(length)

    async def get(self, path: str = "/") -> tuple[int, bytes]:
        self.send(path)
        return await self.response()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()
