"""Hostile clients for the edge-limit tests: a QPACK bomb, rapid reset, idle connections kept by PINGs.

They ride on `h3client`'s connection, writing the frames a well-behaved client never writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import statistics
import time
from typing import Any

import h2.config
import h2.connection
import h2.events
from aioquic.h3.connection import FrameType, encode_frame

from tests.integration.balancer.h3client import Response

GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost"), (b":path", b"/")]


def prefixed(value: int, bits: int, first: int) -> bytes:
    """An integer with an N-bit prefix (RFC 7541 section 5.1), its first byte's high bits set to `first`."""
    mask = (1 << bits) - 1
    if value < mask:
        return bytes([first | value])
    out, rest = bytearray([first | mask]), value - mask
    while rest >= 0x80:
        out.append((rest & 0x7F) | 0x80)
        rest >>= 7
    out.append(rest)
    return bytes(out)


class SilentEncoder:
    """Stands in for the client's QPACK encoder: it ignores the server's decoder stream (our inserts bypass it)."""

    def apply_settings(self, **_: int) -> bytes:
        return b""

    def feed_decoder(self, data: bytes) -> None:
        """The server acknowledges or cancels sections of ours: nothing to track."""


def plant_entry(client: Any, value_bytes: int) -> None:
    """Insert one `x-bomb` entry of `value_bytes` into the server's dynamic table (capacity 4096 first)."""
    client.http._encoder = SilentEncoder()
    instructions = prefixed(4096, 5, 0x20) + prefixed(6, 5, 0x40) + b"x-bomb" + prefixed(value_bytes, 7, 0) + (
        b"v" * value_bytes
    )
    client._quic.send_stream_data(client.http._local_encoder_stream_id, instructions)
    client.transmit()


def bomb_block(references: int) -> bytes:
    """A field section that names dynamic entry 0 `references` times (Required Insert Count 1, Base 1)."""
    return b"\x02\x00" + b"\x80" * references


async def send_block(client: Any, block: bytes) -> Response:
    """Send `block` as a request's HEADERS frame, as is; the server's answer (or the reset)."""
    stream_id = client._quic.get_next_available_stream_id()
    future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
    client.pending[stream_id] = (Response(), future)
    client._quic.send_stream_data(stream_id, encode_frame(FrameType.HEADERS, block), end_stream=True)
    client.transmit()
    return await asyncio.wait_for(future, 30)


async def latencies(client: Any, count: int) -> list[float]:
    """Seconds each of `count` GETs in a row took (all must be answered 200)."""
    took = []
    for _ in range(count):
        started = time.perf_counter()
        response = await client.get("/")
        took.append(time.perf_counter() - started)
        assert response.status == 200, response.status
    return took


def median(values: list[float]) -> float:
    return statistics.median(values)


def open_and_reset(client: Any, count: int) -> None:
    """Rapid reset: open `count` request streams and reset each at once."""
    for _ in range(count):
        stream_id = client._quic.get_next_available_stream_id()
        client.http.send_headers(stream_id, GET, end_stream=False)
        client._quic.reset_stream(stream_id, 0x10C)  # H3_REQUEST_CANCELLED
    client.transmit()


async def ping_until_closed(client: Any, every_s: float, within_s: float) -> float:
    """Send a PING every `every_s` until the server closes the connection; seconds it took (fails after `within_s`)."""
    started = time.perf_counter()
    deadline = started + within_s
    uid = 0
    while not client.terminated.is_set():
        assert time.perf_counter() < deadline, "the connection outlived the HTTP idle timeout"
        uid += 1
        client._quic.send_ping(uid)
        client.transmit()
        try:
            await asyncio.wait_for(client.terminated.wait(), every_s)
        except TimeoutError:
            continue
    return time.perf_counter() - started


async def h2_pings_until_goaway(port: int, every_s: float, within_s: float) -> tuple[bool, float]:
    """An HTTP/2 connection over TLS that sends no request, only a PING every `every_s`, until the server
    closes it; (whether a GOAWAY came first, seconds it took). Fails after `within_s`."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    started, goaway = time.perf_counter(), False
    try:
        while True:
            assert time.perf_counter() - started < within_s, "the connection outlived the HTTP idle timeout"
            if not goaway and not writer.is_closing():  # after GOAWAY only the close is left to read
                connection.ping(b"12345678")
                writer.write(connection.data_to_send())
            try:
                data = await asyncio.wait_for(reader.read(65536), every_s)
            except TimeoutError:
                continue
            except (ConnectionError, ssl.SSLError):
                data = b""
            if not data:
                return goaway, time.perf_counter() - started
            events = connection.receive_data(data)
            goaway = goaway or any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
    finally:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            writer.close()
