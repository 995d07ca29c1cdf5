"""How a client connection leaves: the HTTP idle timer, GOAWAY (a drain, or idle) and CONNECTION_CLOSE.

Split from `connection`, as `streams` is, so that module keeps admission, engine events and requests
and this one the way out: one timer per connection for no request in flight for `http_idle_timeout_s`,
GOAWAY and its `Departure` line, and the close whose end the engine reports later. A mixin: the
engine's declared class puts it on the engine's protocol; `ClientConnection.__init__` sets the
attributes it reads. `Listener`, what a connection needs of its listener, is declared here because both
halves read it (`connection` re-exports it).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import structlog

from services.balancer.core.admission import Admission, Ticket
from services.balancer.core.options import Limits
from services.balancer.proxy.exchange import Exchange
from services.balancer.proxy.router import Router
from services.balancer.quic import H3Code
from services.balancer.quic.departure import Departure
from services.balancer.quic.lifecycle import FEEDS_HTTP, MAY_DEPART, Phase, moved
from services.balancer.quic.streams import StreamSide

log = structlog.get_logger("balancer.client")


class Listener(Protocol):
    """What a connection needs from the listener that accepted it: limits, router, admission.

    The listener (`server.ProxyServer`) is the transport's protocol; a connection reads it from
    there, so this module does not import the listener.
    """

    router: Router
    limits: Limits
    admission: Admission

    def check_closing(self) -> None: ...


class LeavingSide(StreamSide):
    """The idle timer, GOAWAY and close of one client connection (a mixin under `ClientConnection`)."""

    phase: Phase
    server: Listener | None
    ticket: Ticket | None
    exchanges: dict[int, Exchange]
    peer_ip: str
    next_request_id: int
    departure: Departure | None
    _idle: asyncio.TimerHandle | None
    _idle_since: float

    def _become(self, phase: Phase) -> None:
        self.phase = moved(self.phase, phase)

    # the HTTP idle timer: no request in flight for `http_idle_timeout_s`
    def _arm_idle(self) -> None:
        """Note that nothing is in flight since now; one timer per connection checks it (none per request)."""
        if self.exchanges or self.server is None:
            return
        self._idle_since = self._loop.time()
        if self._idle is None and self.phase in FEEDS_HTTP:
            self._idle = self._loop.call_later(self.server.limits.http_idle_timeout_s, self._idle_expired)

    def _disarm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _idle_expired(self) -> None:
        self._idle = None
        if self.phase not in MAY_DEPART or self.server is None:
            return
        timeout = self.server.limits.http_idle_timeout_s
        left = timeout if self.exchanges else self._idle_since + timeout - self._loop.time()
        if left > 0:  # busy, or idle for less than the timeout: look again when it could be due
            self._idle = self._loop.call_later(left, self._idle_expired)
            return
        log.debug("client.http_idle", ip=self.peer_ip)
        if self.http is None:
            self._close_now()  # still no HTTP/3 after the whole timeout: nothing to say GOAWAY on
        else:
            self.go_away()

    # going away (drain of this process, or idle)
    def go_away(self) -> None:
        """HTTP/3 GOAWAY: the client opens new requests on a new connection (a sibling takes it), the
        requests it already sent finish here, then the connection closes with H3_NO_ERROR."""
        if self.phase not in MAY_DEPART:
            return
        handshaking = self.ticket is None or self.ticket.half_open
        if self.http is None and not handshaking:
            self._close_now()
            return
        self._become(Phase.DEPARTING)
        if self.http is not None:
            self._send_goaway()
        # else mid-handshake: closing now would fail the client's connect; GOAWAY goes once HTTP/3 is negotiated

    def _send_goaway(self) -> None:
        self.departure = Departure(self._loop, self.next_request_id, lambda: bool(self.exchanges), self._close_now)
        if not self.engine.tuning.send_goaway(self.http, self.departure.line):
            self._close_now()
            return
        self.schedule()
        self.departure.idle()

    def _close_now(self) -> None:
        self._close(H3Code.H3_NO_ERROR, "going away")

    def _close(self, code: int, reason: str) -> None:
        """Send CONNECTION_CLOSE (once); the engine reports the end after the draining period."""
        if self.phase in FEEDS_HTTP:
            self._become(Phase.CLOSING)
            self._disarm_idle()
            self._quic.close(error_code=code, reason_phrase=reason)
            self.transmit()
        if self.server is not None:
            self.server.check_closing()

    @property
    def closing(self) -> bool:
        return self.phase not in FEEDS_HTTP or self.engine.tuning.is_closing(self._quic)
