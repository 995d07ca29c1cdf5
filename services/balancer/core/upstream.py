"""What the proxy needs from an upstream connection pool, whichever protocol it speaks.

An upstream takes a request and a `Sink` and answers through the sink's callbacks; it returns a
`Call` the proxy uses to stream the request body, pause reading for backpressure, or abort.
Callbacks instead of awaitables keep the per-request cost low (no task per request).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from services.balancer.core.headers import Headers

CONNECT = "connect"
RESET = "reset"
TIMEOUT = "timeout"
PROTOCOL = "protocol"
IDENTITY = "identity"
INVALID = "invalid"
"""Why an upstream call failed; the proxy maps them to 502/504 and decides on a retry. `INVALID`: the VM's
response head broke the field rules (`core.framing.response_problem`) and was never passed on."""


@dataclass(slots=True)
class UpstreamRequest:
    """One request as it goes to a backend (headers already end-to-end plus forwarding ones).

    `headers` never carry `content-length` nor `transfer-encoding`: the upstream frames the body
    itself, with `content_length` (the client's one valid length, checked by `core.request`) when
    there is one, chunked otherwise, never both.
    """

    method: bytes
    path: bytes
    authority: bytes
    headers: Headers
    has_body: bool
    content_length: int | None = None
    """The body's length as the client declared it (one valid `content-length`, no transfer coding);
    None when unknown. The upstream frames the body from this value, never from a forwarded header."""


class Sink(Protocol):
    """Receives one upstream response."""

    def on_headers(self, status: int, headers: Headers) -> None: ...

    def on_data(self, data: bytes) -> None: ...

    def on_end(self) -> None: ...

    def on_failed(self, reason: str) -> None: ...


class Call(Protocol):
    """A request in flight to one backend."""

    def send_body(self, data: bytes, end: bool) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def abandon(self) -> None:
        """The client went away: like `abort`, but the upstream may let a response that is due arrive and
        discard it, to keep a pooled connection (a rapid-reset burst must not cost a handshake per request)."""
        ...

    def abort(self) -> None:
        """Give up on the call: from now on it calls its sink no more, not even from inside a callback
        (the proxy refuses a response in `on_headers` and may already retry with the same sink)."""
        ...

    def buffered(self) -> int:
        """Request bytes accepted from the proxy that the backend has not taken yet."""
        ...


class Upstream(Protocol):
    """Connections to one backend VM."""

    def request(self, request: UpstreamRequest, sink: Sink) -> Call: ...

    def close(self) -> None: ...
