"""The sending side of an HTTP/2 connection: what an exchange calls to answer, and the window it waits on.

Split from `h2`, as `quic.streams` is from the QUIC connection, so that module keeps the reading side
(h2 events, requests, request-body acknowledgements, rapid reset) and this one the writes: h2 refuses
DATA beyond the peer's window, so each stream keeps what does not fit yet (`pending`), which plus the
socket's buffer is the stream's backlog that pauses its upstream; a body nobody reads is stopped once
its response is sent; GOAWAY waits until nothing is in flight; and what h2 has to send is written once
per loop iteration. A base class: `H2Connection.__init__` sets the attributes it reads.
"""

from __future__ import annotations

import asyncio
import contextlib

import h2.connection
import h2.exceptions
from h2.errors import ErrorCodes

from services.balancer.core.headers import Headers
from services.balancer.proxy.exchange import Exchange
from services.balancer.quic import H3Code
from services.balancer.tcp.connection import TcpConnection

CODES: dict[int, ErrorCodes] = {
    H3Code.H3_INTERNAL_ERROR: ErrorCodes.INTERNAL_ERROR,
    H3Code.H3_REQUEST_REJECTED: ErrorCodes.REFUSED_STREAM,
    H3Code.H3_REQUEST_CANCELLED: ErrorCodes.CANCEL,
    H3Code.H3_NO_ERROR: ErrorCodes.NO_ERROR,
}
"""The HTTP/2 error code for each HTTP/3 one an exchange resets with."""


class H2Sending(TcpConnection):
    """Writes of one HTTP/2 connection, held to the peer's windows and coalesced per loop iteration."""

    h2: h2.connection.H2Connection
    exchanges: dict[int, Exchange]
    pending: dict[int, bytearray]
    ending: set[int]
    unread: set[int]
    _scheduled: bool

    # responses
    def _push(self, stream_id: int) -> None:
        """Send as much of a stream's pending response as its window allows; forget it once all is sent."""
        buf = self.pending.get(stream_id)
        if buf is None:
            return
        try:
            sent = self._send_what_fits(stream_id, buf)
        except h2.exceptions.ProtocolError:
            sent = True  # the client reset the stream: what it did not take is dropped
        if sent:
            self.pending.pop(stream_id, None)
            self.ending.discard(stream_id)
            if stream_id in self.unread:
                self._stop_upload(stream_id)
            self._maybe_goodbye()

    def _send_what_fits(self, stream_id: int, buf: bytearray) -> bool:
        """DATA frames while the window lasts; True once the response is sent up to its end."""
        ending = stream_id in self.ending
        while buf:
            size = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size, len(buf))
            if size <= 0:
                return False
            last = ending and size == len(buf)
            self.h2.send_data(stream_id, bytes(buf[:size]), end_stream=last)
            del buf[:size]
            if last:
                return True
        if ending:
            self.h2.end_stream(stream_id)
        return ending

    def _stop_upload(self, stream_id: int) -> None:
        """The response is complete but the client is still sending a body nobody reads (a 413, an
        early answer): stop it with NO_ERROR (RFC 9113 section 8.1), once the response is all sent."""
        if stream_id in self.pending:
            self.unread.add(stream_id)
            return
        self.unread.discard(stream_id)
        try:
            self.h2.reset_stream(stream_id, ErrorCodes.NO_ERROR)
        except h2.exceptions.ProtocolError:
            return
        self.schedule()

    def _push_all(self) -> None:
        for stream_id in list(self.pending):
            self._push(stream_id)
        self.schedule()

    def schedule(self) -> None:
        """Write what h2 has to send once per loop iteration (fewer, fuller TLS records)."""
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
        self.drained()

    def _maybe_goodbye(self) -> None:
        if self.closing and not self.exchanges and not self.pending:
            self._goodbye()

    def _goodbye(self) -> None:
        """GOAWAY (no error: nothing was lost), then close once it is written."""
        with contextlib.suppress(h2.exceptions.ProtocolError):  # already closed by the client's GOAWAY
            self.h2.close_connection()
        self.flush()
        self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # ClientStream for exchanges
    def send_headers(self, stream_id: int, headers: Headers, end: bool) -> None:
        try:
            self.h2.send_headers(stream_id, self.with_alt_svc(headers), end_stream=end)
        except h2.exceptions.ProtocolError:
            return  # the client reset the stream or is gone
        self.schedule()

    def send_data(self, stream_id: int, data: bytes, end: bool) -> None:
        buf = self.pending.setdefault(stream_id, bytearray())
        buf += data
        if end:
            self.ending.add(stream_id)
        self._push(stream_id)
        self.schedule()

    def reset(self, stream_id: int, code: int) -> None:
        self.pending.pop(stream_id, None)
        self.ending.discard(stream_id)
        try:
            self.h2.reset_stream(stream_id, CODES.get(code, ErrorCodes.INTERNAL_ERROR))
        except h2.exceptions.ProtocolError:
            return
        self.schedule()

    def backlog(self, stream_id: int) -> int:
        waiting = len(self.pending.get(stream_id, b""))
        return waiting + (self.transport.get_write_buffer_size() if self.transport is not None else 0)
