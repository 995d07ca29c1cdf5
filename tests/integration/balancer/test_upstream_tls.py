"""Verifying VM certificates on real loopback sockets: a certificate signed by the operator's CA
(`upstream_ca_file`) is trusted for the configured name (`upstream_server_name`), and refused
without that CA, over HTTP/1.1 with TLS and over HTTP/3."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import cast

import pytest

from services.balancer.core.headers import Headers
from services.balancer.core.upstream import Call, Upstream, UpstreamRequest
from services.balancer.quic import EngineName, load_engine
from services.balancer.upstream.h1 import H1Pool, client_tls
from services.balancer.upstream.h3 import H3Upstream
from tests.support.h1server import H1Backend
from tests.support.h3server import H3Backend
from tests.support.testca import VM_NAME, CaFiles, make_ca

Outcome = int | str
"""The response status, or why the call failed."""


class _Sink:
    """Resolves a future with the response status or the failure reason."""

    def __init__(self, future: asyncio.Future[Outcome]) -> None:
        self.future = future

    def on_headers(self, status: int, headers: Headers) -> None:
        if not self.future.done():
            self.future.set_result(status)

    def on_data(self, data: bytes) -> None:
        """The body does not matter."""

    def on_end(self) -> None:
        """The status settled it."""

    def on_failed(self, reason: str) -> None:
        if not self.future.done():
            self.future.set_result(reason)


async def _get(upstream: Upstream) -> Outcome:
    future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
    call: Call = upstream.request(UpstreamRequest(b"GET", b"/", VM_NAME.encode(), [], False), _Sink(future))
    try:
        async with asyncio.timeout(10):
            return await future
    finally:
        call.abort()
        upstream.close()


@pytest.fixture
def ca(tmp_path: Path) -> CaFiles:
    return make_ca(tmp_path / "ca")


def _server_tls(ca: CaFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(ca.cert, ca.key)
    return context


async def test_an_h1_vm_signed_by_the_ca_file_verifies_under_the_server_name(ca: CaFiles) -> None:
    """With the CA file and the server name, the TLS handshake verifies and the VM answers 200."""
    async with H1Backend(tls=_server_tls(ca)) as backend:
        pool = H1Pool("127.0.0.1", backend.port, client_tls(True, str(ca.ca_file)), 2.0, 4, server_name=VM_NAME)
        assert await _get(pool) == 200
        assert backend.requests == 1


async def test_the_ca_file_alone_turns_verification_on_and_checks_the_address(ca: CaFiles) -> None:
    """A CA file with verification left off still verifies; without a server name the VM's address is checked."""
    async with H1Backend(tls=_server_tls(ca)) as backend:
        pool = H1Pool("127.0.0.1", backend.port, client_tls(False, str(ca.ca_file)), 2.0, 4)
        assert await _get(pool) == 200
        tls = client_tls(False, str(ca.ca_file))
        wrong = H1Pool("127.0.0.1", backend.port, tls, 2.0, 4, server_name="other.test")
        assert await _get(wrong) == "connect"


async def test_an_h1_vm_certificate_fails_verification_without_the_ca_file(ca: CaFiles) -> None:
    """With verification on and only the system CAs, the test CA's VM is refused before any request."""
    async with H1Backend(tls=_server_tls(ca)) as backend:
        pool = H1Pool("127.0.0.1", backend.port, client_tls(True), 2.0, 4, server_name=VM_NAME)
        assert await _get(pool) == "connect"
        assert backend.requests == 0


async def test_an_h3_vm_signed_by_the_ca_file_verifies_and_fails_without_it(ca: CaFiles, quic_engine: str) -> None:
    """Over HTTP/3 the same CA file and name verify the VM; verifying without the CA fails the connection."""
    engine = load_engine(cast(EngineName, quic_engine))
    async with H3Backend(ca.cert.parent) as backend:
        trusted = H3Upstream(engine, "127.0.0.1", backend.port, 2.0, False, 0.0, str(ca.ca_file), VM_NAME)
        assert await _get(trusted) == 200
        untrusted = H3Upstream(engine, "127.0.0.1", backend.port, 2.0, True, 0.0, None, VM_NAME)
        assert await _get(untrusted) == "connect"
        assert backend.requests == 1
