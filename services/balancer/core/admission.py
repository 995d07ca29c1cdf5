"""Connections per client address: one cap over QUIC and TCP together, so one address cannot take the
whole connection limit (a handshake storm from one host, or a NAT that went wrong).

Pure bookkeeping: the listeners ask `admit` when a connection arrives and call `leave` when it is
gone; addresses with nothing open are forgotten, so the table holds only addresses with live
connections. The totals (`held`, and its `peak` since someone last reset it) tell `reclaim` when a
connection storm is over.
"""

from __future__ import annotations

from collections import Counter


class PeerCounts:
    """Open connections by client address, against `cap` each."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open: Counter[str] = Counter()
        self.refused = 0
        """Connections refused so far because their address was at the cap (for tests and logs)."""
        self.held = 0
        """Connections open now, all addresses together."""
        self.peak = 0
        """The most `held` has been since the counts began or `peak` was last set (by `reclaim`)."""

    def admit(self, ip: str) -> bool:
        """Count one more connection from `ip`, unless that address already holds `cap`."""
        if self.open[ip] >= self.cap:
            self.refused += 1
            return False
        self.open[ip] += 1
        self.held += 1
        self.peak = max(self.peak, self.held)
        return True

    def leave(self, ip: str) -> None:
        """One connection from `ip` is gone."""
        left = self.open[ip] - 1
        self.held -= 1
        if left > 0:
            self.open[ip] = left
        else:
            del self.open[ip]
