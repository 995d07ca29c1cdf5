"""Hand-written fakes of the balancer's own ports (`core.upstream` and the exchange's `ClientStream`).

The one home of these fakes: unit tests of the router, exchanges, membership and identity use
them instead of each defining its own. A test answers a call by hand through its sink; like
the real upstreams, a call says nothing more once it was aborted or abandoned.
"""

from __future__ import annotations

from services.balancer.core.headers import Headers
from services.balancer.core.upstream import Sink, UpstreamRequest
from services.balancer.proxy.exchange import Exchange


class FakeCall:
    """A call the test answers by hand; it keeps the body the exchange sent and how it ended."""

    def __init__(self, request: UpstreamRequest, sink: Sink) -> None:
        self.request = request
        self.sink = sink
        self.body = b""
        self.ended = False
        self.aborted = False
        self.abandoned = False

    def send_body(self, data: bytes, end: bool) -> None:
        self.body += data
        self.ended = self.ended or end

    def pause(self) -> None:
        """Nothing to pause."""

    def resume(self) -> None:
        """Nothing to resume."""

    def abort(self) -> None:
        self.aborted = True

    def abandon(self) -> None:
        self.abandoned = self.aborted = True

    def buffered(self) -> int:
        return 0

    def answer(self, status: int, headers: Headers, body: bytes) -> None:
        """A whole response, cut short as soon as the exchange gave up on the call."""
        self.sink.on_headers(status, headers)
        if not self.aborted:
            self.sink.on_data(body)
        if not self.aborted:
            self.sink.on_end()


class FakeUpstream:
    """Records the calls made to one backend, and whether it was closed."""

    def __init__(self) -> None:
        self.calls: list[FakeCall] = []
        self.closed = False

    def request(self, request: UpstreamRequest, sink: Sink) -> FakeCall:
        self.calls.append(FakeCall(request, sink))
        return self.calls[-1]

    def close(self) -> None:
        self.closed = True


class FakeClient:
    """A client connection that keeps what the exchanges sent it."""

    def __init__(self) -> None:
        self.headers: dict[int, Headers] = {}
        self.data: dict[int, bytes] = {}
        self.resets: dict[int, int] = {}

    def send_headers(self, stream_id: int, headers: Headers, end: bool) -> None:
        self.headers[stream_id] = headers

    def send_data(self, stream_id: int, data: bytes, end: bool) -> None:
        self.data[stream_id] = self.data.get(stream_id, b"") + data

    def reset(self, stream_id: int, code: int) -> None:
        self.resets[stream_id] = code

    def grant(self, stream_id: int, buffered: int) -> None:
        """Not needed here."""

    def backlog(self, stream_id: int) -> int:
        return 0

    def watch(self, exchange: Exchange) -> None:
        """Not needed here."""

    def done(self, exchange: Exchange) -> None:
        """Not needed here."""
