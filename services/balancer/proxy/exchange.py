"""One proxied request: the client's HTTP/3 stream on one side, an upstream call on the other.

The exchange is a small state machine driven by callbacks (client data, upstream headers, data,
end, failure, its own timer). It owns its retry decision, as Envoy's router filter keeps retry
state per request: it retries an idempotent request once on another backend when the first one
failed before any response byte, asking the router only for a backend, the budget's yes and the
books. It turns failures into 502/504 before the response started or a stream reset after, and
holds both messages to their framing: a request body that breaks its declared length and a VM's
response head that breaks the field rules (`core.framing`) go no further. What it did besides
passing the request on is kept in `flags` for the access log (`core.flags`). Each attempt's course
(the retry, a VM lost, the timer, the books) is its base class's, `attempts.Attempts`.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from services.balancer.core import flags as F
from services.balancer.core.backends import Backend
from services.balancer.core.framing import body_problem, response_problem
from services.balancer.core.headers import Headers, request_id_of, response_headers
from services.balancer.core.identity import identity_of
from services.balancer.core.upstream import IDENTITY, INVALID, TIMEOUT, Call, Upstream, UpstreamRequest
from services.balancer.proxy.attempts import Attempts
from services.balancer.proxy.router import Router
from services.balancer.quic import H3Code

BACKLOG_HIGH = 512 * 1024
"""Unacknowledged response bytes on a client stream above which the upstream is paused."""
BACKLOG_LOW = 128 * 1024
CREDIT_POLL_S = 0.005
"""While an upload waits on a slow upstream, how often its drained bytes are credited back."""
OVERFLOW_FACTOR = 4
"""A body buffered beyond this many windows (credit control unavailable) fails with 503."""
FAILED = (502, b"upstream failed\n")
FAILED_AS = {TIMEOUT: (504, b"upstream timed out\n"), INVALID: (502, b"invalid response from upstream\n")}
"""The balancer's answer to an upstream failure before the response began, by reason (else `FAILED`)."""


class ClientStream(Protocol):
    """What an exchange needs from the client connection that carries it."""

    def send_headers(self, stream_id: int, headers: Headers, end: bool) -> None: ...

    def send_data(self, stream_id: int, data: bytes, end: bool) -> None: ...

    def reset(self, stream_id: int, code: int) -> None: ...

    def grant(self, stream_id: int, buffered: int) -> None: ...

    def backlog(self, stream_id: int) -> int: ...

    def watch(self, exchange: Exchange) -> None: ...

    def done(self, exchange: Exchange) -> None: ...


class Exchange(Attempts):
    """A client request and its (at most two) upstream attempts."""

    def __init__(
        self, client: ClientStream, stream_id: int, request: UpstreamRequest, client_ip: str, router: Router,
        protocol: str = "h3",
    ) -> None:
        self.client = client
        self.stream_id = stream_id
        self.request = request
        self.client_ip = client_ip
        self.router = router
        self.protocol = protocol
        """What the client spoke ("h3", or "h1"/"h2" on the TCP listener), for the access log and metrics."""
        self.request_id = request_id_of(request.headers)
        self.vm = ""
        """The VM of the last attempt ("" when none was tried), kept after the attempt is over."""
        self.loop = router.loop
        self.backend: Backend | None = None
        self.call: Call | None = None
        self.attempts = 0
        self.started_at = self.loop.time()
        self.last_activity = self.started_at
        self.attempt_started = self.started_at
        self.status = 0
        self.response_started = False
        self.finished = False
        self.body_bytes = 0
        self.bytes_sent = 0
        """Response body bytes passed to the client."""
        self.first_byte_at: float | None = None
        self.reset_by = ""
        """"client" or "upstream" when the stream ended in a reset rather than a whole response."""
        self.flags = ""
        """What the balancer did besides passing the request on (`core.flags`), comma-separated."""
        self.upstream: Backend | None = None
        """The backend of the last attempt, kept after it (the access log's upstream address)."""
        self.paused = False
        self.body_ended = not request.has_body
        self._timer: asyncio.TimerHandle | None = None
        self._poll: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Send the request to the backend the router chooses (503 when none may take it)."""
        if body_problem(self.request.content_length, 0, not self.request.has_body):
            self._malformed()  # a declared length, and the stream ended with the headers
        else:
            self._try()

    def _try(self, exclude: Backend | None = None) -> None:
        """One attempt: the router chooses a backend (not `exclude`, the one a retry leaves) and books it."""
        backend = self.router.choose(self.request, self.client_ip, exclude)
        if backend is None:
            self.flags = F.with_flag(self.flags, F.NO_VM)
            self.respond(503, b"no backend available\n", failed=False)
            return
        self.router.track(backend, self)
        self._attach(backend, self.router.upstream_for(backend))

    def _attach(self, backend: Backend, upstream: Upstream) -> None:
        """Send the request to `backend` (first attempt or the retry)."""
        self.backend = self.upstream = backend
        self.vm = backend.vm
        self.attempts += 1
        self.last_activity = self.attempt_started = self.loop.time()
        backend.began()
        if self._timer is None:
            self._timer = self.loop.call_at(self.last_activity + self._first_byte_limit(), self._tick)
        self.call = upstream.request(self.request, self)

    # client side
    def client_data(self, data: bytes, end: bool) -> None:
        """Request body from the client, forwarded as it comes (size-limited)."""
        if self.finished:
            return
        self.body_bytes += len(data)
        if self.body_bytes > self.router.options.max_body_bytes:
            self._abort_call()
            self.flags = F.with_flag(self.flags, F.BODY_TOO_LARGE)
            self.respond(413, b"request body too large\n", failed=False)
            return
        if body_problem(self.request.content_length, self.body_bytes, end):
            self._malformed()  # checked before forwarding: no byte beyond the declared length goes upstream
            return
        self.body_ended = end
        if self.call is not None:
            self.call.send_body(data, end)
            self._grant()

    def _grant(self) -> None:
        """Credit the client with what the upstream drained; keep polling while it lags behind."""
        call = self.call
        if self.finished or call is None or self.body_ended:
            return
        buffered = call.buffered()
        router = self.router
        router.peak_body_buffered = max(router.peak_body_buffered, buffered)
        if buffered > OVERFLOW_FACTOR * router.options.request_buffer_bytes:
            self._abort_call()
            self.flags = F.with_flag(self.flags, F.UPSTREAM_OVERFLOW)
            self.respond(503, b"upstream not taking the request body\n", failed=True)
            return
        self.client.grant(self.stream_id, buffered)
        if buffered and self._poll is None:
            self._poll = self.loop.call_later(CREDIT_POLL_S, self._poll_credit)

    def _poll_credit(self) -> None:
        self._poll = None
        self._grant()

    def client_reset(self) -> None:
        """The client cancelled the stream or went away: the upstream may keep its connection if it can."""
        if not self.finished:
            self.reset_by = "client"
            self.flags = F.with_flag(self.flags, F.CLIENT_RESET)
            call, self.call = self.call, None
            if call is not None:
                call.abandon()
            self._finish(failed=False)

    def _malformed(self) -> None:
        """The request body broke its declared length: nothing more goes upstream, and the client gets
        400, or a stream reset when the response already began."""
        self._abort_call()
        self.flags = F.with_flag(self.flags, F.CLIENT_BODY)
        if self.response_started:
            self.reset_by = "balancer"
            self.client.reset(self.stream_id, H3Code.H3_INTERNAL_ERROR)
            self._finish(failed=False)
        else:
            self.respond(400, b"request body does not match its content-length\n", failed=False)

    def resume_if_drained(self) -> bool:
        """Resume a paused upstream once the client acknowledged enough; True when resumed."""
        if self.paused and self.client.backlog(self.stream_id) < BACKLOG_LOW:
            self.paused = False
            if self.call is not None:
                self.call.resume()
            return True
        return self.finished

    # upstream side (Sink)
    def on_headers(self, status: int, headers: Headers) -> None:
        if self.finished:
            return
        backend = self.backend
        if backend is not None and backend.verification.expected is not None:
            seen = identity_of(headers)  # only VMs that prove who they are pay for the look
            if seen != backend.verification.expected:
                for attempt in self.router.identity_failed(backend, seen):  # out; this attempt fails with the rest
                    attempt.backend_lost(IDENTITY)
                return
        problem = response_problem(headers, lower=True)
        if problem is not None and backend is not None:
            self.router.invalid_response(backend, problem)
            self._give_up(INVALID)
            return
        self.status = status
        self.response_started = True
        self.last_activity = self.first_byte_at = self.loop.time()
        options = self.router.options
        name = backend.vm.encode() if options.backend_header and backend else None
        block = response_headers(status, headers, options.via, name, self.request_id)
        self.client.send_headers(self.stream_id, block, end=False)

    def on_data(self, data: bytes) -> None:
        if self.finished or self.request.method == b"HEAD":
            return  # a HEAD response has no content, even if a backend sends some
        self.last_activity = self.loop.time()
        self.bytes_sent += len(data)
        self.client.send_data(self.stream_id, data, end=False)
        if not self.paused and self.client.backlog(self.stream_id) > BACKLOG_HIGH and self.call is not None:
            self.paused = True
            self.call.pause()
            self.client.watch(self)

    def on_end(self) -> None:
        if self.finished:
            return
        self.client.send_data(self.stream_id, b"", end=True)
        self._finish(failed=self.status >= 500)

    def on_failed(self, reason: str) -> None:
        if self.finished:
            return
        backend = self.backend
        if reason == INVALID and backend is not None:
            self.router.invalid_response(backend, "unparsable")  # refused, not retried: a 502 of its own
        elif backend is not None and not self.response_started and self._retry(backend, reason):
            return
        self._give_up(reason)

    def _give_up(self, reason: str) -> None:
        """End the exchange on an upstream failure: a reset once the response began, else 504 or 502."""
        self._abort_call()
        self.flags = F.with_flag(self.flags, F.for_reason(reason))
        if self.response_started:
            self.reset_by = "upstream"
            self.client.reset(self.stream_id, H3Code.H3_INTERNAL_ERROR)
            self._finish(failed=True, upstream_failed=True)
        else:
            self.respond(*FAILED_AS.get(reason, FAILED), failed=True, upstream_failed=True)

    # endings
    def respond(self, status: int, body: bytes, failed: bool, upstream_failed: bool = False) -> None:
        """Answer the client from the balancer itself (no backend response reached it)."""
        self.status = status
        self.first_byte_at = self.loop.time()
        self.bytes_sent += len(body)
        headers = [(b":status", str(status).encode()), (b"content-type", b"text/plain"),
                   (b"content-length", str(len(body)).encode()), (b"via", self.router.options.via)]
        if self.request_id:
            headers.append((b"x-request-id", self.request_id))
        self.client.send_headers(self.stream_id, headers, end=False)
        self.client.send_data(self.stream_id, body, end=True)
        self._finish(failed=failed, upstream_failed=upstream_failed)

    def _finish(self, failed: bool, upstream_failed: bool = False) -> None:
        self.finished = True
        if self._timer is not None:
            self._timer.cancel()
        if self._poll is not None:
            self._poll.cancel()
        self._end_attempt(failed, upstream_failed)
        self.client.done(self)
        self.router.finished(self)
