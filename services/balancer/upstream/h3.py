"""HTTP/3 upstream: one long-lived QUIC client connection per backend, many concurrent streams.

The UDP socket is connected to the backend, so an ICMP port-unreachable (the VM's server died)
fails the calls at once instead of after a QUIC timeout. A lost connection is re-opened on the
next request; requests that arrive while it is being opened wait for the handshake.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any, ClassVar

import structlog

from services.balancer.core.framing import upstream_fields
from services.balancer.core.upstream import CONNECT, RESET, Sink, UpstreamRequest
from services.balancer.process.sockets import grow_buffers
from services.balancer.quic import Engine, H3Base, H3Code, Library, ProtocolBase

log = structlog.get_logger("balancer.upstream.h3")

UPSTREAM_BUFFER_BYTES = 2 * 1024 * 1024
IDLE_TIMEOUT_S = 10.0
"""A connection that hears nothing for this long is closed (and re-opened on the next request):
a VM whose server restarted on the same port silently drops our old connection's packets."""


class H3Call:
    """One request stream on the backend's QUIC connection."""

    __slots__ = ("_body", "_ended", "aborted", "client", "request", "sink", "stream_id")

    def __init__(self, request: UpstreamRequest, sink: Sink) -> None:
        self.request = request
        self.sink = sink
        self.client: H3Client | None = None
        self.stream_id = -1
        self._body: list[tuple[bytes, bool]] = []
        self._ended = not request.has_body
        self.aborted = False

    def attach(self, client: H3Client) -> None:
        """Give the call to a connection, which opens its stream now or once the VM allows one more."""
        self.client = client
        client.start(self)

    def opened(self, stream_id: int) -> None:
        """The stream exists: send what the client streamed meanwhile."""
        assert self.client is not None
        self.stream_id = stream_id
        for data, end in self._body:
            self.client.send_data(stream_id, data, end)
        self._body.clear()

    def send_body(self, data: bytes, end: bool) -> None:
        if self._ended:
            return
        self._ended = end
        if self.client is None or self.stream_id < 0:
            self._body.append((data, end))
        else:
            self.client.send_data(self.stream_id, data, end)

    def pause(self) -> None:
        """QUIC flow control towards the VM is the engine's; nothing to do per call."""

    def resume(self) -> None:
        """See `pause`."""

    def buffered(self) -> int:
        """Bytes waiting for the connection plus those the VM has not acknowledged on the stream."""
        waiting = sum(len(data) for data, _ in self._body)
        client = self.client
        if client is None or self.stream_id < 0:
            return waiting
        return waiting + client.engine.tuning.stream_backlog(client._quic, self.stream_id)

    def abandon(self) -> None:
        """A stream reset costs the shared connection nothing: the same as `abort`."""
        self.abort()

    def abort(self) -> None:
        self.aborted = True
        if self.client is not None:
            self.client.cancel(self)


class HeadSafeH3(H3Base):
    """The engine's H3 connection, minus one check that is wrong for HEAD (a mixin).

    aioquic compares a response's content-length with its body on every stream, so a HEAD
    response (which carries the GET's length and no body, RFC 9110 section 9.3.2) would close
    the whole upstream connection and fail every request on it. (qh3 makes no such check, so
    there the override is never called.)
    """

    def __init__(self, quic: Any) -> None:
        super().__init__(quic)
        self.head_streams: set[int] = set()

    def _check_content_length(self, stream: Any) -> None:
        if stream.stream_id in self.head_streams:
            return
        super()._check_content_length(stream)


class H3Client(ProtocolBase):
    """Client glue on the engine's protocol: H3 events to calls (a mixin, see `quic`)."""

    engine: ClassVar[Library]
    h3: ClassVar[type[HeadSafeH3]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http = self.h3(self._quic)
        self.calls: dict[int, H3Call] = {}
        self.queued: deque[H3Call] = deque()
        """Calls waiting for the VM to allow another stream (its MAX_STREAMS), oldest first."""
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.dead = False
        self._scheduled = False

    def start(self, call: H3Call) -> None:
        """Open the call's stream now, or queue it while the VM's stream limit is reached."""
        if self.queued or not self.engine.tuning.can_open_stream(self._quic):
            self.queued.append(call)
        else:
            call.opened(self.open(call))

    def _open_queued(self) -> None:
        while self.queued and not self.dead and self.engine.tuning.can_open_stream(self._quic):
            call = self.queued.popleft()
            if not call.aborted:
                call.opened(self.open(call))

    def open(self, call: H3Call) -> int:
        stream_id = self._quic.get_next_available_stream_id()
        self.calls[stream_id] = call
        request = call.request
        if request.method == b"HEAD":
            self.http.head_streams.add(stream_id)
        headers = [
            (b":method", request.method), (b":scheme", b"https"),
            (b":authority", request.authority), (b":path", request.path), *upstream_fields(request, h1=False),
        ]
        self.http.send_headers(stream_id, headers, end_stream=not request.has_body)
        self.schedule()
        return stream_id

    def send_data(self, stream_id: int, data: bytes, end: bool) -> None:
        if stream_id in self.calls and not self.dead:
            self.http.send_data(stream_id, data, end_stream=end)
            self.schedule()

    def cancel(self, call: H3Call) -> None:
        if call.stream_id < 0:
            return  # still queued: `_open_queued` skips aborted calls
        if self.calls.pop(call.stream_id, None) is not None and not self.dead:
            self._quic.reset_stream(call.stream_id, H3Code.H3_REQUEST_CANCELLED)
            self.schedule()

    def schedule(self) -> None:
        """Coalesce sends of one loop iteration into one transmit."""
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if not self.dead:
            self.engine.tuning.ack_with_next_packet(self._quic, self._loop.time())
            self.transmit()

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        """Feed the QUIC core, but transmit once per loop iteration rather than per datagram.

        aioquic transmits after every datagram, and every transmit walks all open streams of
        the connection (every request in flight to this VM) at least twice per packet built;
        one transmit for all the datagrams and request frames of an iteration cuts that work.
        """
        self._quic.receive_datagram(data, addr, now=self._loop.time())  # type: ignore[arg-type]
        self._process_events()
        if self.engine.tuning.is_closing(self._quic):
            self._die(RESET)  # the VM closed the connection: fail over now, not after the draining period
        elif self.queued:
            self._open_queued()  # streams ended, or the VM raised its stream limit
        self.schedule()

    def error_received(self, exc: Exception) -> None:
        """ICMP unreachable on the connected socket: the backend is gone."""
        self._die(CONNECT if not self.ready.done() else RESET)
        self._quic.close()

    def quic_event_received(self, event: Any) -> None:
        engine = self.engine
        if isinstance(event, engine.HandshakeCompleted) and not self.ready.done():
            self.ready.set_result(None)
        elif isinstance(event, engine.ConnectionTerminated):
            self._die(CONNECT if not self.ready.done() else RESET)
        elif isinstance(event, engine.StreamReset):
            self._fail_stream(event.stream_id)
        for http_event in self.http.handle_event(event):
            try:
                self._http_event(http_event)
            except Exception:
                log.exception("upstream.event_failed")
                self._fail_stream(getattr(http_event, "stream_id", -1))

    def _http_event(self, event: Any) -> None:
        call = self.calls.get(getattr(event, "stream_id", -1))
        if call is None:
            return
        if isinstance(event, self.engine.HeadersReceived):
            status = next((int(v) for n, v in event.headers if n == b":status"), 0)
            if status >= 200:
                call.sink.on_headers(status, [(n, v) for n, v in event.headers if not n.startswith(b":")])
        elif isinstance(event, self.engine.DataReceived) and event.data:
            call.sink.on_data(event.data)
        if getattr(event, "stream_ended", False) and self.calls.pop(call.stream_id, None) is not None:
            self.http.head_streams.discard(call.stream_id)
            call.sink.on_end()

    def _fail_stream(self, stream_id: int) -> None:
        call = self.calls.pop(stream_id, None)
        if call is not None and not call.aborted:
            call.sink.on_failed(RESET)

    def _die(self, reason: str) -> None:
        if self.dead:
            return
        self.dead = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))
            self.ready.exception()  # mark retrieved: waiters get it from `wait`
        calls, self.calls = [*self.calls.values(), *self.queued], {}
        self.queued.clear()
        for call in calls:
            if not call.aborted:
                call.sink.on_failed(reason)

    def connection_lost(self, exc: Exception | None) -> None:
        self._die(RESET)
        super().connection_lost(exc)


class H3Upstream:
    """The one QUIC connection to a backend, opened on demand and re-opened when lost."""

    def __init__(
        self, engine: Engine, host: str, port: int, connect_timeout_s: float, verify: bool, ack_delay_s: float,
        ca_file: str | None = None, server_name: str | None = None,
    ) -> None:
        """`ca_file` (PEM) replaces the system's CAs and turns verification on, as in `h1.client_tls`;
        `server_name` is the name sent and verified (None: the VM's address when verifying)."""
        self.engine = engine
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self.config = engine.QuicConfiguration(
            is_client=True, alpn_protocols=engine.H3_ALPN, idle_timeout=IDLE_TIMEOUT_S
        )
        verify = verify or ca_file is not None
        self.config.verify_mode = ssl.CERT_REQUIRED if verify else ssl.CERT_NONE
        self.config.cafile = ca_file
        self.config.server_name = server_name or (host if verify else None)
        self.config.max_datagram_size = 1350
        engine.tuning.prepare(self.config)
        self.ack_delay_s = ack_delay_s
        self.client: H3Client | None = None
        self.waiting: list[H3Call] = []
        self._task: asyncio.Task[None] | None = None

    def request(self, request: UpstreamRequest, sink: Sink) -> H3Call:
        call = H3Call(request, sink)
        client = self.client
        if client is not None and not client.dead and self.engine.tuning.is_closing(client._quic):
            client._die(RESET)  # closed by a timer since its last datagram (qh3 would raise on the next send)
        if client is not None and not client.dead and client.ready.done():
            call.attach(client)
            return call
        self.waiting.append(call)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._connect())
        return call

    async def _connect(self) -> None:
        try:
            self.client = await self._open()
            async with asyncio.timeout(self.connect_timeout_s):
                await asyncio.shield(self.client.ready)
        except (OSError, TimeoutError, ConnectionError) as error:
            log.debug("upstream.connect_failed", backend=f"{self.host}:{self.port}", error=str(error) or "timeout")
            if self.client is not None:
                self.client.close()
            self.client = None
            self._release(None)
        else:
            self._release(self.client)
        finally:
            self._task = None

    async def _open(self) -> H3Client:
        loop = asyncio.get_running_loop()
        engine = self.engine
        quic = engine.QuicConnection(configuration=self.config)
        engine.tuning.harden(quic)
        engine.tuning.set_ack_delay(quic, self.ack_delay_s)
        protocol: type[H3Client] = engine.UpstreamClient
        _, client = await loop.create_datagram_endpoint(lambda: protocol(quic), remote_addr=(self.host, self.port))
        sock = client._transport.get_extra_info("socket") if client._transport is not None else None
        if sock is not None:
            grow_buffers(sock, UPSTREAM_BUFFER_BYTES)
        client.connect((self.host, self.port))
        return client

    def _release(self, client: H3Client | None) -> None:
        waiting, self.waiting = self.waiting, []
        for call in waiting:
            if call.aborted:
                continue
            if client is None:
                call.sink.on_failed(CONNECT)
            else:
                call.attach(client)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.client is not None:
            self.client.close()
            self.client = None
