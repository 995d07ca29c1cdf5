"""The TCP listener: browsers' HTTP/1.1 and HTTP/2 over TLS on the UDP port's number, pointing to HTTP/3."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import niquests
import pytest

from services.balancer.tcp.listener import reuseport_tcp_socket
from shared.bus import Bus
from shared.contract.load import BalancerReported
from tests.integration.balancer.h3client import h3_client
from tests.integration.balancer.harness import StartBalancer, announce
from tests.support import Collector, wait_until
from tests.support.h1server import H1Backend

pytestmark = [
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),  # the dev certificate
]

VERSIONS = {"h1": 11, "h2": 20}
"""niquests' `http_version` for each protocol the listener speaks."""


def _fetch(protocol: str, url: str, method: str = "GET", **kwargs: Any) -> niquests.Response:
    """One request with niquests over TLS, held to `protocol` (HTTP/3 is off: it would follow the Alt-Svc)."""
    h1, h2 = protocol == "h1", protocol == "h2"
    with niquests.Session(disable_http3=True, disable_http2=not h2, disable_http1=not h1) as session:
        return session.request(method, url, verify=False, timeout=10, **kwargs)


async def fetch(protocol: str, port: int, path: str = "/", method: str = "GET", **kwargs: Any) -> niquests.Response:
    response = await asyncio.to_thread(_fetch, protocol, f"https://127.0.0.1:{port}{path}", method, **kwargs)
    assert response.http_version == VERSIONS[protocol]
    return response


@pytest.mark.parametrize("protocol", ["h1", "h2"])
async def test_tcp_client_gets_backend_answer_and_alt_svc(
    protocol: str, bus: Bus, start_balancer: StartBalancer
) -> None:
    """An HTTP/1.1 or HTTP/2 GET over TLS gets the backend's body and an Alt-Svc naming the UDP port."""
    async with H1Backend() as backend, start_balancer() as balancer:
        await announce(bus, balancer, "vm-a", backend.address)
        response = await fetch(protocol, balancer.port)
        assert balancer.tcp.requests[protocol] == 1
    assert response.status_code == 200
    assert (response.text or "").strip() == f"Server Address: {backend.address}"
    assert response.headers["alt-svc"] == f'h3=":{balancer.port}"; ma=86400'
    assert response.headers["x-quicfleet-backend"] == "vm-a"
    version = {"h1": b"1.1", "h2": b"2"}[protocol]
    assert backend.last_headers[b"via"] == version + b" quicfleet-test", "via names the protocol the balancer got"
    assert backend.last_headers[b"x-forwarded-proto"] == b"https"


@pytest.mark.parametrize("protocol", ["h1", "h2"])
async def test_upload_and_big_download_are_proxied(protocol: str, bus: Bus, start_balancer: StartBalancer) -> None:
    """A 3 MB POST body reaches the backend whole and a 5 MB chunked response comes back whole."""
    async with H1Backend() as backend, start_balancer() as balancer:
        await announce(bus, balancer, "vm-a", backend.address)
        upload = await fetch(protocol, balancer.port, "/upload", "POST", data=b"y" * 3_000_000)
        download = await fetch(protocol, balancer.port, "/big?bytes=5000000")
    assert upload.status_code == 200 and upload.text == "received 3000000 bytes\n"
    assert download.status_code == 200 and download.content == b"x" * 5_000_000


@pytest.mark.parametrize(("protocol", "size"), [("h1", 17_000), ("h1", 40_000), ("h2", 17_000)])
async def test_too_large_header_block_gets_431(
    protocol: str, size: int, bus: Bus, start_balancer: StartBalancer
) -> None:
    """A header block over listen_max_header_bytes (16 KiB) is answered 431 and never reaches the backend."""
    async with H1Backend() as backend, start_balancer() as balancer:
        await announce(bus, balancer, "vm-a", backend.address)
        response = await fetch(protocol, balancer.port, headers={"x-big": "b" * size})
    assert response.status_code == 431
    assert "alt-svc" in response.headers
    assert backend.served() == 0


@pytest.mark.parametrize("protocol", ["h1", "h2"])
async def test_no_backend_gives_503(protocol: str, start_balancer: StartBalancer) -> None:
    """With no ready VM a TCP client gets the balancer's own 503 (still advertising HTTP/3)."""
    async with start_balancer() as balancer:
        response = await fetch(protocol, balancer.port)
    assert response.status_code == 503
    assert response.text == "no backend available\n"
    assert response.headers["alt-svc"] == f'h3=":{balancer.port}"; ma=86400'


async def test_listen_tcp_off_opens_no_tcp_port(start_balancer: StartBalancer) -> None:
    """With listen_tcp false nothing accepts TCP on the port."""
    async with start_balancer(listen_tcp=False) as balancer:
        assert balancer.tcp is None
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", balancer.port)


async def tls_h1(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw TLS connection offering only HTTP/1.1, for what no client library sends (garbage, silence)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return await asyncio.open_connection("127.0.0.1", port, ssl=context)


async def test_malformed_request_gets_400_and_close(start_balancer: StartBalancer) -> None:
    """A request line h11 cannot parse is answered 400 and the connection is closed."""
    async with start_balancer() as balancer:
        reader, writer = await tls_h1(balancer.port)
        writer.write(b"garbage\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in answer.lower() and answer.endswith(b"Bad Request\n")


async def test_idle_keep_alive_connection_is_closed(start_balancer: StartBalancer) -> None:
    """A kept-alive HTTP/1.1 connection that sends nothing more is closed after listen_idle_timeout_s."""
    async with start_balancer(listen_idle_timeout_s=0.3) as balancer:
        reader, writer = await tls_h1(balancer.port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 503 ")
        await asyncio.wait_for(reader.readexactly(len(b"no backend available\n")), 10)
        assert balancer.tcp is not None and balancer.tcp.connections == 1
        assert await asyncio.wait_for(reader.read(), 10) == b"", "the balancer closed the idle connection"
        writer.close()
        await wait_until(lambda: balancer.tcp.connections == 0, timeout=5, what="the connection uncounted")


async def test_connections_over_the_limit_are_closed(start_balancer: StartBalancer) -> None:
    """With listen_max_connections=1 a second TCP connection is closed at once while the first still works."""
    async with start_balancer(listen_max_connections=1) as balancer:
        first_reader, first = await tls_h1(balancer.port)
        assert balancer.tcp is not None
        await wait_until(lambda: balancer.tcp.connections == 1, timeout=5, what="the first connection counted")
        reader, second = await tls_h1(balancer.port)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        first.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        head = await asyncio.wait_for(first_reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 503 ") and balancer.tcp.connections == 1
        first.close()
        second.close()


async def test_tcp_and_quic_connections_share_one_per_address_count(start_balancer: StartBalancer) -> None:
    """With listen_max_connections_per_ip=1 an HTTP/3 connection from 127.0.0.1 fills the address's share, so
    a TCP connection from it is closed at once (counted as `per_ip`); after the QUIC one ends TCP is taken."""
    async with start_balancer(listen_max_connections_per_ip=1) as balancer:
        assert balancer.tcp is not None and balancer.router is not None
        per_ip = balancer.tcp.limits.per_ip
        async with h3_client(balancer.port) as quic:
            await quic.get("/")
            reader, refused = await tls_h1(balancer.port)
            assert await asyncio.wait_for(reader.read(), 10) == b""
            refused.close()
        await wait_until(lambda: not per_ip.open, timeout=10, what="the QUIC connection uncounted")
        _, taken = await tls_h1(balancer.port)
        await wait_until(lambda: balancer.tcp is not None and balancer.tcp.connections == 1, timeout=5,
                         what="the TCP connection counted")
        taken.close()
        assert balancer.router.telemetry.refused_connections == {"per_ip": 1}


async def test_workers_can_bind_the_same_tcp_port(start_balancer: StartBalancer) -> None:
    """The listening socket has SO_REUSEPORT, so a worker process can bind the same TCP port beside it."""
    async with start_balancer() as balancer:
        sibling = reuseport_tcp_socket("127.0.0.1", balancer.port)
        try:
            assert sibling.getsockname()[1] == balancer.port
        finally:
            sibling.close()


async def test_worker_processes_share_the_tcp_port_under_uvloop(
    bus: Bus, settings_env: dict[str, str], tmp_path: Path
) -> None:
    """`python -m services.balancer` with two workers (uvloop) serves HTTP/1.1 and HTTP/2 on one port, exits 0."""
    reports = Collector()

    async def on_report(event: BalancerReported, _msg: object) -> None:
        await reports(event)

    await bus.subscribe(bus.subjects.balancer_report, BalancerReported, on_report)
    env = os.environ | settings_env | {
        "QUICFLEET_BALANCER_WORKERS": "2", "QUICFLEET_LISTEN_PORT": "0", "QUICFLEET_BALANCER_LIST_WINDOW_S": "0.1",
        "QUICFLEET_BALANCER_REPORT_INTERVAL_S": "0.3", "QUICFLEET_BALANCER_STATE_DIR": str(tmp_path),
    }
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.Popen([sys.executable, "-m", "services.balancer"], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        first = await reports.wait_for(lambda r: True, timeout=30)
        await reports.wait_for(lambda r: r.balancer != first.balancer, timeout=30)
        assert first.address is not None
        port = int(first.address.rsplit(":", 1)[1])
        answers = [await fetch(protocol, port) for protocol in ("h1", "h2", "h1", "h2")]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    assert code == 0, proc.stdout.read()[-2000:] if proc.stdout else ""
    assert {a.status_code for a in answers} == {503}
    assert {a.headers["alt-svc"] for a in answers} == {f'h3=":{port}"; ma=86400'}
