"""One HTTP/3 client connection to a backend and the request streams (calls) it carries.

Split from `h3` so that module keeps the per-backend upstream (opening the connection on demand,
re-opening a lost one, the calls that wait for its handshake) and this one the connection itself:
streams opened within the VM's limit, H3 events turned into sink calls, one transmit per loop
iteration, and every call failed at once when the connection dies. The engines declare their
upstream class from `H3Client` and `HeadSafeH3` (re-exported by `h3`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, ClassVar

import structlog

from services.balancer.core.framing import upstream_fields
from services.balancer.core.upstream import CONNECT, RESET, Sink, UpstreamRequest
from services.balancer.quic import H3Base, H3Code, Library, ProtocolBase

log = structlog.get_logger("balancer.upstream.h3")


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
