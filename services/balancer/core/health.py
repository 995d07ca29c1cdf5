"""Health of one backend: active checks with rise/fall and passive ejection that grows.

Passive ejection has two streaks, like Envoy's outlier detection: connection-level failures
(connect error, reset, timeout: `ejection_consecutive`) and 5xx responses
(`ejection_consecutive_5xx`). They are kept apart because a VM that answers 5xx is reachable
but broken, while a few failed connections may be one bad moment: the 5xx threshold can then
be set higher, or turned off (0) for an application that answers 5xx on purpose.

Pure state machine: the caller feeds check results and request outcomes with `now`, and asks
`usable(now)`. Keeping it free of I/O lets the unit tests walk every transition by hand.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HealthPolicy:
    """Thresholds of the active checks and of passive ejection."""

    rise: int = 2
    fall: int = 2
    ejection_consecutive: int = 3
    ejection_consecutive_5xx: int = 5
    """5xx responses in a row that eject (0: off). Envoy's `consecutive_5xx` default."""
    ejection_base_s: float = 5.0
    ejection_max_s: float = 60.0


@dataclass
class Health:
    """A backend's health; starts healthy because the provisioner only announces VMs that answered."""

    policy: HealthPolicy
    healthy: bool = True
    check_streak: int = 0
    failures_in_a_row: int = 0
    errors_in_a_row: int = 0
    """5xx responses in a row (any response below 500 ends the streak)."""
    ejections: int = 0
    ejected_until: float = 0.0
    last_failure: float = float("-inf")

    def usable(self, now: float) -> bool:
        """True when active checks pass and no passive ejection is running."""
        return self.healthy and now >= self.ejected_until

    def ejected(self, now: float) -> bool:
        return now < self.ejected_until

    def check_passed(self) -> bool:
        """Record a passed active check; returns True when this made the backend healthy again."""
        if self.healthy:
            self.check_streak = 0
            return False
        self.check_streak += 1
        if self.check_streak >= self.policy.rise:
            self.healthy, self.check_streak = True, 0
            return True
        return False

    def check_failed(self) -> bool:
        """Record a failed active check; returns True when this made the backend unhealthy."""
        if not self.healthy:
            self.check_streak = 0
            return False
        self.check_streak += 1
        if self.check_streak >= self.policy.fall:
            self.healthy, self.check_streak = False, 0
            return True
        return False

    def request_succeeded(self, now: float) -> None:
        """A proxied request got a non-5xx response; a long quiet spell forgives past ejections."""
        self.failures_in_a_row = self.errors_in_a_row = 0
        if self.ejections and now - self.last_failure > self.policy.ejection_max_s:
            self.ejections = 0

    def request_failed(self, now: float) -> bool:
        """A proxied request failed (connect, reset, timeout); returns True when this ejected the backend."""
        self.last_failure = now
        if self.ejected(now):
            return False
        self.failures_in_a_row += 1
        if self.failures_in_a_row < self.policy.ejection_consecutive:
            return False
        self.failures_in_a_row = 0
        return self._eject(now)

    def server_error(self, now: float) -> bool:
        """A 5xx response came back; returns True when this ejected the backend.

        The VM answered, so the connection-failure streak ends; the 5xx streak grows.
        """
        self.last_failure = now
        self.failures_in_a_row = 0
        threshold = self.policy.ejection_consecutive_5xx
        if threshold <= 0 or self.ejected(now):
            return False
        self.errors_in_a_row += 1
        if self.errors_in_a_row < threshold:
            return False
        self.errors_in_a_row = 0
        return self._eject(now)

    def _eject(self, now: float) -> bool:
        self.ejected_until = now + self.ejection_time()
        self.ejections += 1
        return True

    def ejection_time(self) -> float:
        """Base time doubled for each earlier ejection, capped."""
        doubled: float = self.policy.ejection_base_s * float(2 ** min(self.ejections, 30))
        return min(doubled, self.policy.ejection_max_s)
