"""A client connection going away: the HTTP/3 GOAWAY line it drew, and its close once idle.

Kept apart from the connection so the rule is small and readable: streams at or above the line
are refused (never processed, so the client may send them again elsewhere, RFC 9114 section
5.2), streams below it finish, and the connection closes once nothing is in flight, but not
before a short linger after the GOAWAY.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

LINGER_S = 0.25
"""After GOAWAY, how long an idle connection stays open: requests the client sent before it read the
frame (or that arrive reordered) still get an answer or an explicit REQUEST_REJECTED, not a close."""


class Departure:
    """One connection's GOAWAY: the first stream id it will not serve, and when to close."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, line: int, busy: Callable[[], bool], close: Callable[[], None]
    ) -> None:
        self.loop, self.line = loop, line
        self.busy, self.close = busy, close
        self.at = loop.time()
        self._timer: asyncio.TimerHandle | None = None

    def refuses(self, stream_id: int) -> bool:
        """Whether a new request stream is past the line (to be rejected, not served)."""
        return stream_id >= self.line

    def idle(self) -> None:
        """The connection may have nothing in flight: close it after the linger if it still has nothing."""
        if self._timer is None and not self.busy():
            self._timer = self.loop.call_at(self.at + LINGER_S, self._check)

    def _check(self) -> None:
        self._timer = None
        if not self.busy():
            self.close()
