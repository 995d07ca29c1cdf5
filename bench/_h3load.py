"""HTTP/3 load generator: closed-loop aioquic clients, many streams per connection, one process.

Run as `python -m bench._h3load --port P --conns C --streams S --seconds D` (pinned by the caller
with taskset); prints one JSON line: completed requests, errors and the latencies (seconds) of
requests finished after the warm-up. Callbacks only, no task or future per request, so the
generator spends its time in QUIC, like the server it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import ssl
import time
from typing import Any, cast

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent

from services.balancer.process.sockets import grow_buffers


class Stats:
    """Counters shared by the connections of one process."""

    def __init__(self, measure_from: float, stop_at: float) -> None:
        self.measure_from = measure_from
        self.stop_at = stop_at
        self.latencies: list[float] = []
        self.errors = 0


class LoadClient(QuicConnectionProtocol):
    """Keeps `streams` requests in flight; each finished one starts the next until `stop_at`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.started: dict[int, float] = {}
        self.status: dict[int, bytes] = {}
        self.stats: Stats | None = None
        self.request_headers: list[tuple[bytes, bytes]] = []
        self.idle = asyncio.Event()

    def begin(self, stats: Stats, streams: int, authority: str, path: str) -> None:
        self.stats = stats
        self.request_headers = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", authority.encode()),
                                (b":path", path.encode()), (b"user-agent", b"quicfleet-bench")]
        for _ in range(streams):
            self._send()
        self.transmit()

    def _send(self) -> None:
        stream_id = self._quic.get_next_available_stream_id()
        self.http.send_headers(stream_id, self.request_headers, end_stream=True)
        self.started[stream_id] = time.perf_counter()

    def quic_event_received(self, event: QuicEvent) -> None:
        for http_event in self.http.handle_event(event):
            if isinstance(http_event, HeadersReceived):
                self.status[http_event.stream_id] = dict(http_event.headers).get(b":status", b"")
            if isinstance(http_event, HeadersReceived | DataReceived) and http_event.stream_ended:
                self._done(http_event.stream_id)

    def _done(self, stream_id: int) -> None:
        stats = self.stats
        assert stats is not None
        now = time.perf_counter()
        began = self.started.pop(stream_id)
        if self.status.pop(stream_id, b"") != b"200":
            stats.errors += 1
        elif began >= stats.measure_from:
            stats.latencies.append(now - began)
        if now < stats.stop_at:
            self._send()
        elif not self.started:
            self.idle.set()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE)
    config.max_datagram_size = args.datagram
    start = time.perf_counter()
    stats = Stats(start + args.warmup, start + args.warmup + args.seconds)
    async with _connections(args, config) as clients:
        measure_start = time.perf_counter()
        stats.measure_from = measure_start + args.warmup
        stats.stop_at = stats.measure_from + args.seconds
        for client in clients:
            client.begin(stats, args.streams, f"127.0.0.1:{args.port}", args.path)
        await asyncio.wait_for(asyncio.gather(*(c.idle.wait() for c in clients)), args.warmup + args.seconds + 30)
    return {"completed": len(stats.latencies), "errors": stats.errors, "seconds": args.seconds,
            "latencies": stats.latencies}


class _connections:
    """Open `conns` connections (entered together, closed together)."""

    def __init__(self, args: argparse.Namespace, config: QuicConfiguration) -> None:
        self.args, self.config = args, config
        self.managers: list[Any] = []

    async def __aenter__(self) -> list[LoadClient]:
        clients: list[LoadClient] = []
        for _ in range(self.args.conns):
            manager = connect("127.0.0.1", self.args.port, configuration=self.config, create_protocol=LoadClient)
            self.managers.append(manager)
            client = cast(LoadClient, await manager.__aenter__())
            sock = client._transport.get_extra_info("socket") if client._transport is not None else None
            if sock is not None and self.args.conns <= 64:
                grow_buffers(sock, 2 * 1024 * 1024)
            clients.append(client)
        return clients

    async def __aexit__(self, *exc: object) -> None:
        for manager in self.managers:
            await manager.__aexit__(None, None, None)


async def hold(args: argparse.Namespace) -> dict[str, Any]:
    """Open `conns` connections, do one GET on each, keep them open until stdin closes (RSS probe)."""
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE, idle_timeout=120)
    stats = Stats(0.0, 0.0)
    async with _connections(args, config) as clients:
        for client in clients:
            client.begin(stats, 1, f"127.0.0.1:{args.port}", args.path)
        await asyncio.gather(*(c.idle.wait() for c in clients))
        print(json.dumps({"open": len(clients), "ok": len(stats.latencies), "errors": stats.errors}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, input)
    return {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--conns", type=int, default=8)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--path", default="/")
    parser.add_argument("--datagram", type=int, default=1350)
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--out", help="write the JSON result to this file instead of stdout")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(hold(args) if args.hold else run(args))
    if result and args.out:
        with open(args.out, "w") as out:
            json.dump(result, out)
    elif result:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()


async def probe(port: int, timeout: float = 3.0) -> int:
    """One GET over HTTP/3; its status, or 0 when nothing answered in time."""
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE)
    stats = Stats(0.0, 0.0)
    try:
        async with asyncio.timeout(timeout):
            async with connect("127.0.0.1", port, configuration=config, create_protocol=LoadClient) as client:
                assert isinstance(client, LoadClient)
                client.begin(stats, 1, f"127.0.0.1:{port}", "/")
                await client.idle.wait()
    except (TimeoutError, ConnectionError, OSError):
        return 0
    return 200 if stats.latencies else 500
