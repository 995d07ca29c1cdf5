"""The restart policy of `quicfleet up`: backoff in a crash loop, a fresh count after a stable run, none for exit 2."""

from __future__ import annotations

from ops.stack.restarts import MAX_DELAY_S, STABLE_S, Restarts, next_restart, restarted


def _crash_loop(times: int, run_s: float) -> list[float | None]:
    """The waits asked for when a service dies `run_s` after each start, `times` times over."""
    history, now, waits = Restarts(started_at=0.0), 0.0, []
    for _ in range(times):
        now += run_s
        wait, history = next_restart(-9, history, now)
        waits.append(wait)
        now += wait or 0.0
        history = restarted(history, now)
    return waits


def test_a_crash_loop_backs_off_doubling_up_to_the_cap() -> None:
    """A service that dies a second after each start waits 1, 2, 4 ... seconds, never more than the cap."""
    assert _crash_loop(7, 1.0) == [1.0, 2.0, 4.0, 8.0, 16.0, MAX_DELAY_S, MAX_DELAY_S]


def test_a_service_that_ran_stably_restarts_at_once_again() -> None:
    """Crashes further apart than the stable time each wait only the first, short delay."""
    assert _crash_loop(4, STABLE_S + 1) == [1.0, 1.0, 1.0, 1.0]


def test_a_refused_setting_is_left_down() -> None:
    """Exit code 2 (a setting the service refused) is not restarted: it would only fail the same way."""
    wait, history = next_restart(2, Restarts(count=3, started_at=5.0), 10.0)
    assert wait is None and history == Restarts(count=3, started_at=5.0)
