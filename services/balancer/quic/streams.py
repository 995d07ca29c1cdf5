"""The sending side of a client connection: what an exchange calls to answer (`proxy.exchange.ClientStream`).

Split from `connection` so that module and `leaving` keep the connection's life (admission and phases;
GOAWAY, idle and close) and this one the writes: headers, data and resets onto the engine's HTTP/3
layer, stream credit, and one coalesced transmit per loop iteration (fewer, fuller datagrams). A
mixin: the engine's declared class puts it on the engine's protocol; `ClientConnection.__init__`
sets the attributes it reads.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from services.balancer.core.headers import Headers
from services.balancer.proxy.exchange import Exchange
from services.balancer.quic import Credit, Library, ProtocolBase


class StreamSide(ProtocolBase):
    """Writes of one client connection, coalesced into one transmit per loop iteration."""

    engine: ClassVar[Library]
    http: Any
    send_errors: tuple[type[BaseException], ...]
    credit: Credit | None
    watched: list[Exchange]
    ack_early: bool
    coalesce_s: float
    _scheduled: bool
    _deferred: asyncio.TimerHandle | None

    def send_headers(self, stream_id: int, headers: Headers, end: bool) -> None:
        if self.http is not None:
            try:
                self.http.send_headers(stream_id, headers, end_stream=end)
            except self.send_errors:
                return
            self.schedule()

    def send_data(self, stream_id: int, data: bytes, end: bool) -> None:
        if self.http is not None:
            try:
                self.http.send_data(stream_id, data, end_stream=end)
            except self.send_errors:
                return
            self.schedule()

    def reset(self, stream_id: int, code: int) -> None:
        try:
            self._quic.reset_stream(stream_id, code)
        except self.send_errors:
            return
        self.schedule()

    def backlog(self, stream_id: int) -> int:
        return self.engine.tuning.stream_backlog(self._quic, stream_id)

    def grant(self, stream_id: int, buffered: int) -> None:
        if self.credit is not None and self.credit.update(stream_id, buffered):
            self.schedule()

    def watch(self, exchange: Exchange) -> None:
        self.watched.append(exchange)

    def schedule(self) -> None:
        """Coalesce the sends of one loop iteration into one transmit (fewer, fuller datagrams)."""
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _defer(self) -> None:
        """Transmit within `coalesce_s` at the latest (earlier if a response is ready)."""
        if self._deferred is None and not self._scheduled:
            self._deferred = self._loop.call_later(self.coalesce_s, self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None
        if self.ack_early:
            self.engine.tuning.ack_with_next_packet(self._quic, self._loop.time())
        self.transmit()
