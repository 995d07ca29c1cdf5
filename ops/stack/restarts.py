"""When `quicfleet up` restarts a service that exited on its own: after a growing wait, never for a bad setting.

Pure, so the policy is tested without processes: the supervisor asks `next_restart` each time a
service exits and waits what it says. A crash loop backs off (1, 2, 4 ... 30 s) instead of
spinning; a run that lasted `STABLE_S` starts the count again; exit code 2 is a setting the
service refused, which a restart would only repeat, so that one is left down and said.
"""

from __future__ import annotations

from dataclasses import dataclass

BAD_SETTING_EXIT = 2
STABLE_S = 60.0
MAX_DELAY_S = 30.0


@dataclass(frozen=True)
class Restarts:
    """One service's crash streak: restarts so far, and when its current run began."""

    count: int = 0
    started_at: float = 0.0


def next_restart(code: int, history: Restarts, now: float) -> tuple[float | None, Restarts]:
    """Seconds to wait before restarting (None: leave it down) and the streak as it now stands."""
    if code == BAD_SETTING_EXIT:
        return None, history
    streak = 0 if now - history.started_at >= STABLE_S else history.count
    return min(MAX_DELAY_S, 2.0**streak), Restarts(streak + 1, history.started_at)


def restarted(history: Restarts, now: float) -> Restarts:
    """The streak after the service has been started again at `now`."""
    return Restarts(history.count, now)
