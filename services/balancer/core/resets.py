"""A budget of stream resets per client connection, against rapid reset (CVE-2023-44487).

Opening a stream and resetting it at once costs a client two small frames and the balancer a
request intake, an exchange and perhaps an upstream connection; streams reset this way never
count against the concurrent-stream limit, so that limit alone does not stop it. The budget is a
token bucket: `per_s` resets a second on average, bursts of up to `per_s`; the connection that
overdraws it is closed (HTTP/2 GOAWAY ENHANCE_YOUR_CALM, HTTP/3 H3_EXCESSIVE_LOAD). Pure: the
caller passes the clock.
"""

from __future__ import annotations


class ResetBudget:
    """Resets one connection may still make; `spend` says when it has made too many."""

    __slots__ = ("_last", "_tokens", "per_s")

    def __init__(self, per_s: int, now: float) -> None:
        self.per_s = per_s
        self._tokens = float(per_s)
        self._last = now

    def spend(self, now: float) -> bool:
        """Count one reset at `now`; False once the connection is over its budget (close it)."""
        self._tokens = min(float(self.per_s), self._tokens + (now - self._last) * self.per_s) - 1.0
        self._last = now
        return self._tokens >= 0.0
