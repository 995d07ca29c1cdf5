"""The bad-input log throttle: a few lines per key and period, the rest counted and reported."""

from __future__ import annotations

from shared.throttle import OVERFLOW_KEY, LineThrottle


def test_a_burst_is_written_then_lines_are_only_counted_until_the_period_ends() -> None:
    """Past `burst` lines in a period none is written; the next period's first line says how many were left out."""
    throttle = LineThrottle(burst=3, period_s=10.0)
    decisions = [throttle.admit("fleet.vm.ready", 100.0 + i * 0.01) for i in range(10)]
    assert decisions == [0, 0, 0, None, None, None, None, None, None, None]
    assert throttle.admit("fleet.vm.ready", 110.5) == 7
    assert throttle.totals["fleet.vm.ready"] == 11


def test_keys_are_limited_apart() -> None:
    """A flood on one subject does not silence another subject's lines."""
    throttle = LineThrottle(burst=1, period_s=10.0)
    assert throttle.admit("a", 0.0) == 0
    assert throttle.admit("a", 0.1) is None
    assert throttle.admit("b", 0.2) == 0


def test_invented_subjects_share_one_overflow_key() -> None:
    """Past `max_keys` distinct keys, new ones are counted under one overflow key, so the table stays bounded."""
    throttle = LineThrottle(burst=1, period_s=10.0, max_keys=3)
    for i in range(50):
        throttle.admit(f"fleet.vm.x{i}", 0.0)
    assert len(throttle.windows) == 4
    assert throttle.totals[OVERFLOW_KEY] == 47
