"""An aioquic HTTP/3 client that runs inside the L4 topology's client namespace, driven over pipes.

The tests run outside the namespaces, so the client is a subprocess (`ip netns exec <client_ns>`)
that reads one JSON command a line on stdin and answers one JSON line on stdout. Connections are
named and held open between commands, so a test can keep an established flow across map changes:

    {"op": "open", "conn": "a"}            -> {"ok": true, "port": 40122}  (or {"error": "..."})
    {"op": "open", "conn": "b", "local_port": 40122}  (from a chosen source port: a reused one)
    {"op": "get", "conn": "a"}             -> {"status": 200, "body": "Server Address: ..."}
    {"op": "rebind", "conn": "a"}          -> {"port": 40123}  (a new UDP source port, NAT rebinding)
    {"op": "close", "conn": "a"}           -> {"ok": true}
    {"op": "fresh", "count": 8}            -> {"bodies": [...], "errors": [...]}  (new connection per GET)
    {"op": "load_start", "workers": 4}     -> {"ok": true}  (each worker: connect, GET, close, repeat)
    {"op": "load_stop"}                    -> {"ok": n, "failed": m, "bodies": {...}, "errors": {...}}

`L4Client` is the test side: `async with L4Client(net) as client: await client.call(op="open", conn="a")`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import ssl
import sys
from collections import Counter
from typing import Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, QuicEvent

REQUEST_TIMEOUT_S = 10.0


class _Conn(QuicConnectionProtocol):
    """One HTTP/3 connection: GETs resolve to (status, body) futures."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.pending: dict[int, tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            for _, future in self.pending.values():
                if not future.done():
                    future.set_exception(ConnectionError(f"closed: {event.reason_phrase or event.error_code}"))
            self.pending.clear()
        for http_event in self.http.handle_event(event):
            entry = self.pending.get(getattr(http_event, "stream_id", -1))
            if entry is None:
                continue
            answer, future = entry
            if isinstance(http_event, HeadersReceived):
                answer["status"] = int(dict(http_event.headers).get(b":status", b"0"))
            elif isinstance(http_event, DataReceived):
                answer["body"] += http_event.data.decode(errors="replace")
            if getattr(http_event, "stream_ended", False):
                self.pending.pop(http_event.stream_id)  # type: ignore[attr-defined]
                if not future.done():
                    future.set_result(answer)

    async def get(self, authority: str) -> dict[str, Any]:
        stream_id = self._quic.get_next_available_stream_id()
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[stream_id] = ({"status": 0, "body": ""}, future)
        self.http.send_headers(stream_id, [(b":method", b"GET"), (b":scheme", b"https"),
                                           (b":authority", authority.encode()), (b":path", b"/")], end_stream=True)
        self.transmit()
        return await asyncio.wait_for(future, REQUEST_TIMEOUT_S)

    async def rebind(self) -> int:
        """Move to a new UDP source port mid-connection; returns it."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", 0))
        old = self._transport
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: self, sock=sock)
        if old is not None:
            old.close()
        return int(sock.getsockname()[1])


async def _connect(host: str, port: int, local_port: int = 0) -> tuple[asyncio.DatagramTransport, _Conn]:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE, server_name=host)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", local_port))
    transport, conn = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Conn(QuicConnection(configuration=config)), sock=sock
    )
    try:
        conn.connect((host, port))
        await asyncio.wait_for(conn.wait_connected(), REQUEST_TIMEOUT_S)
    except BaseException:
        await _close(transport, conn)
        raise
    return transport, conn


async def _close(transport: asyncio.BaseTransport, conn: _Conn) -> None:
    conn.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(conn.wait_closed(), 2)
    transport.close()


class _Driver:
    """The subprocess side: named connections and a background load."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.conns: dict[str, tuple[asyncio.DatagramTransport, _Conn]] = {}
        self.load: list[asyncio.Task[None]] = []
        self.bodies: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.stopping = False

    async def one_shot(self) -> str:
        transport, conn = await _connect(self.host, self.port)
        try:
            answer = await conn.get(self.host)
        finally:
            await _close(transport, conn)
        if answer["status"] != 200:
            raise RuntimeError(f"status {answer['status']}")
        return str(answer["body"]).strip()

    async def worker(self) -> None:
        while not self.stopping:
            try:
                self.bodies[await self.one_shot()] += 1
            except Exception as error:
                self.errors[f"{type(error).__name__}: {error}"[:120]] += 1

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        op, name = command["op"], command.get("conn", "")
        if op == "open":
            self.conns[name] = await _connect(self.host, self.port, int(command.get("local_port", 0)))
            return {"ok": True, "port": self.conns[name][0].get_extra_info("sockname")[1]}
        if op == "get":
            return await self.conns[name][1].get(self.host)
        if op == "rebind":
            return {"port": await self.conns[name][1].rebind()}
        if op == "close":
            await _close(*self.conns.pop(name))
            return {"ok": True}
        if op == "fresh":
            return await self.fresh(int(command.get("count", 1)))
        if op == "load_start":
            self.stopping = False
            self.load = [asyncio.create_task(self.worker()) for _ in range(int(command.get("workers", 4)))]
            return {"ok": True}
        if op == "load_stop":
            self.stopping = True
            await asyncio.gather(*self.load)
            return {"ok": sum(self.bodies.values()), "failed": sum(self.errors.values()),
                    "bodies": dict(self.bodies), "errors": dict(self.errors)}
        raise ValueError(f"unknown op {op!r}")

    async def fresh(self, count: int) -> dict[str, Any]:
        bodies: list[str] = []
        errors: list[str] = []
        for _ in range(count):
            try:
                bodies.append(await self.one_shot())
            except Exception as error:
                errors.append(f"{type(error).__name__}: {error}"[:120])
        return {"bodies": bodies, "errors": errors}


async def _serve_stdin(host: str, port: int) -> None:
    driver = _Driver(host, port)
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        try:
            answer = await driver.handle(json.loads(line))
        except Exception as error:
            answer = {"error": f"{type(error).__name__}: {error}"[:300]}
        print(json.dumps(answer), flush=True)


class L4Client:
    """The test side: starts the driver in `net.client_ns` toward `net.vip:net.port`; `call(**command)`."""

    def __init__(self, net: Any, host: str | None = None, port: int | None = None) -> None:
        self.net = net
        self.host = host or net.vip
        self.port = port or net.port
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> L4Client:
        argv = [sys.executable, "-m", "tests.support.l4client", self.host, str(self.port)]
        self._process = await self.net.exec_in(self.net.client_ns, argv, stdin=asyncio.subprocess.PIPE,
                                               stdout=asyncio.subprocess.PIPE)
        return self

    async def call(self, timeout: float = 60, **command: Any) -> dict[str, Any]:
        """Send one command and wait for its answer (a dict; `error` set when it failed)."""
        process = self._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        process.stdin.write(json.dumps(command).encode() + b"\n")
        await process.stdin.drain()
        line = await asyncio.wait_for(process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"the client process ended (exit {process.returncode})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def __aexit__(self, *_exc: object) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    args = parser.parse_args()
    asyncio.run(_serve_stdin(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
