"""Retry budget: retries may add at most a share of the recent request rate.

Without a budget, retries during an outage multiply load on the backends that are left. Counts
live in two rolling windows so the budget follows the recent rate, not all history.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RetryBudget:
    """Allows a retry while retries in the window stay within `ratio` of requests (plus `min_retries`)."""

    ratio: float = 0.2
    window_s: float = 10.0
    min_retries: int = 3
    _start: float = 0.0
    _requests: tuple[int, int] = (0, 0)
    _retries: tuple[int, int] = (0, 0)

    def _roll(self, now: float) -> None:
        """Keep the previous and the current window; older ones fall away."""
        elapsed = now - self._start
        if elapsed < self.window_s:
            return
        if elapsed < 2 * self.window_s:
            self._requests, self._retries = (self._requests[1], 0), (self._retries[1], 0)
        else:
            self._requests, self._retries = (0, 0), (0, 0)
        self._start = now

    def request(self, now: float) -> None:
        """Count one first attempt."""
        self._roll(now)
        self._requests = (self._requests[0], self._requests[1] + 1)

    def try_retry(self, now: float) -> bool:
        """Spend one retry if the budget allows it."""
        self._roll(now)
        allowed = self.ratio * sum(self._requests) + self.min_retries
        if sum(self._retries) + 1 > allowed:
            return False
        self._retries = (self._retries[0], self._retries[1] + 1)
        return True
