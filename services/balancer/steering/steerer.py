"""The steering glue of one process: its slot, its siblings, and the datagrams it passes between them.

`route` runs for every datagram the UDP socket delivers, before the QUIC engine sees it; it costs
one dict lookup when the connection is here (the usual case). Datagrams from siblings arrive on
the slot's local socket and go straight to the engine: a forwarded datagram is never forwarded
again, so two processes can never bounce one between them.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from services.balancer.steering import peers
from services.balancer.steering.cid import Layout
from services.balancer.steering.plan import Decision, decide, destination_cid

log = structlog.get_logger("balancer.steering")

REFRESH_S = 0.5
"""How often the live sibling set is re-read (a forward to a slot not yet seen is tried anyway)."""
REREAD_S = 0.05
"""While draining with no sibling known, how often a new connection may make it look again (not per datagram)."""
READ_BATCH = 256

Handler = Callable[[bytes, Any], None]


@dataclass
class SteeringCounts:
    """What steering did, for tests, logs and metrics."""

    forwarded: int = 0
    broadcast: int = 0
    dropped: int = 0
    received: int = 0
    received_unknown: int = 0


class Steerer:
    """One process's part in connection-ID steering on a shared port."""

    def __init__(self, layout: Layout, port: int, handle: Handler, known: Callable[[bytes], bool]) -> None:
        self.layout, self.port = layout, port
        self.handle, self.known = handle, known
        self.directory = peers.private_directory(layout.directory or peers.default_directory())
        self.sock, self.slot = peers.claim(self.directory, port, layout.node)
        self.path = self.directory / peers.name_of(port, layout.node, self.slot)
        self.live: set[int] = {self.slot}
        self.draining = False
        self.counts = SteeringCounts()
        self._names: dict[int, str] = {}
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._read_at = 0.0
        self._loop.add_reader(self.sock.fileno(), self._readable)
        self.refresh()

    def mint(self) -> bytes:
        """A new connection ID that names this process."""
        return self.layout.mint(self.slot)

    def refresh(self) -> None:
        """Re-read which slots are alive (and keep doing so)."""
        self._reread()
        self._timer = self._loop.call_later(REFRESH_S, self.refresh)

    def drain(self) -> None:
        """Send new connections to siblings from now on, knowing every sibling alive right now: the
        replacement in a rolling restart bound its slot moments ago, maybe after the last periodic
        read, and a draining process that knew of no sibling would refuse its clients."""
        self.draining = True
        self._reread()

    def _reread(self) -> None:
        try:
            self.live = peers.live_slots(self.directory, self.port, self.layout.node) | {self.slot}
        except OSError:
            self.live = {self.slot}
        self._read_at = self._loop.time()

    def route(self, data: bytes, addr: Any, again: bool = True) -> bool:
        """Send a datagram where it belongs; False when this process should handle it itself."""
        parsed = destination_cid(data)
        if parsed is None:
            return False
        long_header, dcid = parsed
        if long_header and self.draining and len(self.live) == 1 and self._loop.time() - self._read_at > REREAD_S:
            self._reread()  # a sibling may have joined since: look again before refusing a new client
        decision = decide(self.layout, self.slot, dcid, long_header, self.known(dcid), self.live, self.draining)
        return self._act(decision, data, addr, again)

    def _act(self, decision: Decision, data: bytes, addr: Any, again: bool = False) -> bool:
        if decision.action == "local":
            return False
        if decision.action == "forward" and decision.slot is not None:
            if self._send(decision.slot, peers.FORWARD, data, addr):
                self.counts.forwarded += 1
                return True
            if again and self.draining and decision.fallback == "local" and self.live - {self.slot}:
                return self.route(data, addr, again=False)  # that sibling is gone (out of `live` now): once more
            return self._act(Decision(decision.fallback), data, addr)
        if decision.action == "broadcast":
            self._broadcast(data, addr)
            return True
        self.counts.dropped += 1
        return True

    def _broadcast(self, data: bytes, addr: Any) -> None:
        self.counts.broadcast += 1
        for slot in self.live - {self.slot}:
            self._send(slot, peers.BROADCAST, data, addr)

    def _send(self, slot: int, kind: int, data: bytes, addr: Any) -> bool:
        """One datagram to a sibling; False when its slot is gone (a full queue drops, as UDP would)."""
        try:
            self.sock.sendto(peers.encode(kind, addr, data), self._address(slot))
        except BlockingIOError:
            return True
        except OSError:
            self.live.discard(slot)
            return False
        return True

    def _address(self, slot: int) -> str:
        name = self._names.get(slot)
        if name is None:
            name = self._names[slot] = str(self.directory / peers.name_of(self.port, self.layout.node, slot))
        return name

    def _readable(self) -> None:
        for _ in range(READ_BATCH):
            try:
                message = self.sock.recv(65_536)
            except OSError:  # nothing left (BlockingIOError) or the socket closed
                return
            self._received(message)

    def _received(self, message: bytes) -> None:
        decoded = peers.decode(message)
        if decoded is None:
            return
        kind, addr, data = decoded
        if kind == peers.BROADCAST:
            parsed = destination_cid(data)
            if parsed is None or not self.known(parsed[1]):
                self.counts.received_unknown += 1
                return
        self.counts.received += 1
        self.handle(data, addr)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._loop.remove_reader(self.sock.fileno())
        peers.release(self.path)
        self.sock.close()


def bind_steerer(layout: Layout, sock: socket.socket, handle: Handler, known: Callable[[bytes], bool]) -> Steerer:
    """The steerer for the UDP socket `sock` (its port names the group of siblings)."""
    steerer = Steerer(layout, sock.getsockname()[1], handle, known)
    log.info("steering.joined", port=steerer.port, node=layout.node, slot=steerer.slot, live=sorted(steerer.live),
             directory=str(steerer.directory))
    return steerer
