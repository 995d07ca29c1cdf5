"""HTTP/1.1 upstream: a keep-alive connection pool per backend over asyncio Protocols and httptools.

Idle connections are reused last-in first-out (warm ones first); a new connection is opened
only when none is idle. Responses are parsed by httptools' C parser and streamed to the sink
chunk by chunk; `pause()` stops reading the socket, which is the backpressure towards the VM.

The body is framed by the balancer (`core.framing`): one `content-length` when the client's
length is known, chunked otherwise, never a framing header of the client's. A response head the
parser refuses (two framings, two lengths, a bad byte) fails the call as `INVALID`. A client that
resets a request already sent, whose response has not begun, does not cost the connection: the
response is read and dropped (`linger_s`, `LINGER_MAX_BYTES`) and the connection pooled again,
so a burst of resets cannot turn into a burst of TLS handshakes to a VM.

The connection and its call are `h1conn`'s; this module is the pool and the upstream TLS context.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

import structlog

from services.balancer.core.upstream import CONNECT, Sink, UpstreamRequest
from services.balancer.upstream.h1conn import H1Call, H1Connection

log = structlog.get_logger("balancer.upstream.h1")

LINGER_S = 2.0
"""How long an abandoned call's response may take to arrive and be dropped (the pool's default)."""


class H1Pool:
    """Keep-alive connections to one backend."""

    def __init__(
        self, host: str, port: int, tls: ssl.SSLContext | None, connect_timeout_s: float, max_idle: int,
        server_name: str | None = None, linger_s: float = LINGER_S,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.server_name = server_name
        """The name sent (SNI) and verified in the VM's certificate; None: the VM's address."""
        self.linger_s = linger_s
        """How long an abandoned call's response may take to arrive (0: close at once)."""
        self.connect_timeout_s = connect_timeout_s
        self.max_idle = max_idle
        self.idle: list[H1Connection] = []
        self.connecting = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def request(self, request: UpstreamRequest, sink: Sink) -> H1Call:
        call = H1Call(request, sink)
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                conn.start(call)
                return call
        task = asyncio.get_running_loop().create_task(self._connect_for(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return call

    async def _connect_for(self, call: H1Call) -> None:
        self.connecting += 1
        try:
            conn = await self._open()
        except (OSError, TimeoutError, ssl.SSLError) as error:
            log.debug("upstream.connect_failed", backend=f"{self.host}:{self.port}", error=str(error))
            if not call.aborted:
                call.sink.on_failed(CONNECT)
            return
        finally:
            self.connecting -= 1
        if call.aborted:
            self.release(conn)
        else:
            conn.start(call)

    async def _open(self) -> H1Connection:
        loop = asyncio.get_running_loop()
        factory: Callable[[], H1Connection] = lambda: H1Connection(self)  # noqa: E731
        server_hostname = (self.server_name or self.host) if self.tls is not None else None
        connecting = loop.create_connection(
            factory, self.host, self.port, ssl=self.tls, server_hostname=server_hostname
        )
        async with asyncio.timeout(self.connect_timeout_s):
            _, conn = await connecting
        return conn

    def release(self, conn: H1Connection) -> None:
        """Return an idle connection; beyond `max_idle` (or after close) it is closed instead."""
        if self._closed or len(self.idle) >= self.max_idle:
            conn.close()
        else:
            self.idle.append(conn)

    def forget(self, conn: H1Connection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)

    def close(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for conn in self.idle:
            conn.close()
        self.idle.clear()


def client_tls(verify: bool, ca_file: str | None = None) -> ssl.SSLContext:
    """TLS context for upstream connections (VMs often carry self-signed certificates).

    `ca_file` (a PEM bundle) replaces the system's CAs and turns verification on: an operator who
    names the CA that signs the VMs' certificates wants them checked.
    """
    context = ssl.create_default_context(cafile=ca_file)
    if not verify and ca_file is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
