"""Smuggling and injection through the TCP listener: HTTP/1.1 as raw bytes, HTTP/2 as raw header lists (h2 client).

Each case of the corpus (smuggling_corpus: 34 HTTP/1.1 byte strings, 72 header lists) goes to a raw
recording HTTP/1.1 backend through the balancer; each asserts on the bytes the backend received
(one request, canonical framing, nothing injected) or on the refusal (and the backend got nothing).
"""

from __future__ import annotations

import asyncio
import ssl

import h2.config
import h2.connection
import h2.events
import h11
import pytest

from shared.bus import Bus
from tests.integration.balancer.harness import StartBalancer, announce
from tests.integration.balancer.smuggling_corpus import BLOCKS, RAW, Block, Raw, problems_of_forwarded
from tests.support.recorder import Recorder, recording_backend

TIMEOUT_S = 10
REFUSALS = {"400", "501", "reset", "goaway", "closed"}
"""How a malformed request may end: 400, 501 for a transfer coding h11 does not implement (RFC 9112 §6.1), a
stream reset or GOAWAY (HTTP/2 treats malformed requests as stream or connection errors), or a closed socket."""


@pytest.fixture
def quic_engine() -> str:
    """The TCP fronts do not depend on the QUIC engine: run these once."""
    return "aioquic"


def tls_context(alpn: str) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols([alpn])
    return context


async def h1_exchange(port: int, data: bytes, closes: bool) -> tuple[int, bool]:
    """Send raw bytes on a fresh TLS connection: the status of the one answer and, when `closes`, whether the
    balancer then closed the connection (read to its end)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls_context("http/1.1"))
    try:
        writer.write(data)
        client = h11.Connection(h11.CLIENT)
        client.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))  # lets h11 read a response
        status = 0
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                chunk = await asyncio.wait_for(reader.read(65536), TIMEOUT_S)
                client.receive_data(chunk)
                if not chunk:
                    return status, True
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            if isinstance(event, h11.EndOfMessage):
                break
    except TimeoutError:
        writer.close()
        return -1, False
    try:
        return status, closes and await asyncio.wait_for(reader.read(65536), TIMEOUT_S) == b""
    except TimeoutError:
        return status, False
    finally:
        writer.close()


async def h2_exchange(port: int, headers: list[tuple[bytes, bytes]], body: bytes | None) -> str:
    """Send one header list unvalidated over HTTP/2: `200`, `400`…, `reset`, `goaway` or `closed`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls_context("h2"))
    config = h2.config.H2Configuration(client_side=True, header_encoding=None, validate_outbound_headers=False,
                                       normalize_outbound_headers=False, split_outbound_cookies=False)
    conn = h2.connection.H2Connection(config)
    try:
        conn.initiate_connection()
        conn.send_headers(1, headers, end_stream=body is None)
        if body is not None:
            conn.send_data(1, body, end_stream=True)
        writer.write(conn.data_to_send())
        return await asyncio.wait_for(_h2_outcome(conn, reader, writer), TIMEOUT_S)
    finally:
        writer.close()


async def _h2_outcome(conn: h2.connection.H2Connection, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> str:
    status = ""
    while True:
        data = await reader.read(65536)
        if not data:
            return status or "closed"
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = dict(event.headers)[b":status"].decode()
            elif isinstance(event, h2.events.StreamEnded):
                return status
            elif isinstance(event, h2.events.StreamReset):
                return "reset"
            elif isinstance(event, h2.events.ConnectionTerminated):
                return "goaway"
        writer.write(conn.data_to_send())


def judge_refused(name: str, outcome: str, recorder: Recorder) -> list[str]:
    problems = [] if outcome in REFUSALS else [f"answered {outcome}"]
    if recorder.raw():
        problems.append(f"backend got {recorder.raw()[:120]!r}")
    return [f"{name}: {p}" for p in problems]


def judge_forwarded(name: str, outcome: str, recorder: Recorder, path: bytes, body: bytes) -> list[str]:
    problems = [] if outcome == "200" else [f"answered {outcome}"]
    problems += problems_of_forwarded(recorder.requests(), path, body)
    return [f"{name}: {p}" for p in problems]


async def run_raw(case: Raw, port: int, recorder: Recorder) -> list[str]:
    recorder.clear()
    status, closed = await h1_exchange(port, case.data, case.closes)
    if case.forwarded:
        return judge_forwarded(case.name, str(status), recorder, case.path, case.body)
    problems = judge_refused(case.name, str(status), recorder)
    if case.closes and not closed:
        problems.append(f"{case.name}: connection left open after a framing refusal")
    return problems


async def run_block(case: Block, port: int, recorder: Recorder) -> list[str]:
    recorder.clear()
    outcome = await h2_exchange(port, case.headers, case.body)
    if case.forwarded:
        return judge_forwarded(case.name, outcome, recorder, case.path, case.body or b"")
    return judge_refused(case.name, outcome, recorder)


async def test_http1_corpus_is_refused_or_forwarded_canonically(bus: Bus, start_balancer: StartBalancer) -> None:
    """Each of the 34 HTTP/1.1 smuggling cases is refused with nothing at the backend (framing ones closing the
    connection), or reaches it as exactly one canonical request."""
    async with recording_backend() as recorder, start_balancer() as balancer:
        await announce(bus, balancer, "vm-a", recorder.address)
        problems = [p for case in RAW for p in await run_raw(case, balancer.port, recorder)]
        refused = balancer.router.telemetry.refused_requests
    assert len(RAW) == 34
    assert problems == [], "\n".join(problems)
    assert refused["content_length_with_transfer_encoding"] >= 1, refused


async def test_http2_corpus_is_refused_or_forwarded_canonically(bus: Bus, start_balancer: StartBalancer) -> None:
    """Each of the 72 header-list cases sent over HTTP/2 is refused with nothing at the backend, or reaches it as
    exactly one canonical request."""
    async with recording_backend() as recorder, start_balancer() as balancer:
        await announce(bus, balancer, "vm-a", recorder.address)
        problems = [p for case in BLOCKS for p in await run_block(case, balancer.port, recorder)]
    assert len(BLOCKS) == 72
    assert problems == [], "\n".join(problems)
