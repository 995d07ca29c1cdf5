"""Giving memory back after a connection storm: when (`core.trim`), and the reclaimer's looks (`reclaim`)."""

from __future__ import annotations

from services.balancer.core.admission import PeerCounts
from services.balancer.core.trim import TrimPolicy, trim_due
from services.balancer.process.reclaim import Reclaimer, glibc_trim, rss_mib
from services.balancer.process.telemetry import Telemetry

POLICY = TrimPolicy(min_interval_s=10.0, min_drop=64)


def test_a_storm_that_fell_to_under_half_its_peak_and_stopped_falling_is_due() -> None:
    """1,000 connections at the peak, 2 now and 2 at the last look: the storm is over, memory goes back."""
    assert trim_due(POLICY, 100.0, held=2, previous=2, peak=1000, last_at=None)


def test_a_count_still_falling_is_not_due_yet() -> None:
    """Halfway out of a storm (fewer than at the last look) the return waits for the fall to stop."""
    assert not trim_due(POLICY, 100.0, held=300, previous=450, peak=1000, last_at=None)


def test_a_count_above_half_its_peak_is_not_due() -> None:
    """600 of a 1,000 peak is not a storm that subsided."""
    assert not trim_due(POLICY, 100.0, held=600, previous=600, peak=1000, last_at=None)


def test_a_small_fall_is_not_due_however_deep() -> None:
    """From 40 to 0 is all of the peak but fewer than `min_drop` connections: not worth a collection."""
    assert not trim_due(POLICY, 100.0, held=0, previous=0, peak=40, last_at=None)


def test_returns_are_at_least_the_interval_apart() -> None:
    """A storm over 5 s after the last return waits; 10 s after it, it is due."""
    assert not trim_due(POLICY, 105.0, held=0, previous=0, peak=500, last_at=100.0)
    assert trim_due(POLICY, 110.0, held=0, previous=0, peak=500, last_at=100.0)


def test_an_interval_of_zero_turns_returns_off() -> None:
    """`balancer_memory_trim_s` 0 never returns memory, whatever the storm."""
    assert not trim_due(TrimPolicy(min_interval_s=0), 100.0, held=0, previous=0, peak=10_000, last_at=None)


def test_peer_counts_keep_the_total_and_its_peak() -> None:
    """Admissions raise `held` and `peak`; departures lower `held` only; refusals change neither."""
    counts = PeerCounts(2)
    for ip in ("192.0.2.1", "192.0.2.1", "192.0.2.1", "192.0.2.2"):
        counts.admit(ip)
    counts.leave("192.0.2.1")
    assert (counts.held, counts.peak) == (2, 3)


class FakeTrim:
    """Stands in for glibc's malloc_trim and counts the calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return True


def _storm(counts: PeerCounts, size: int) -> None:
    """`size` connections from distinct addresses arrive, then all but one leave."""
    ips = [f"10.0.{i // 250}.{i % 250}" for i in range(size)]
    for ip in ips:
        counts.admit(ip)
    for ip in ips[1:]:
        counts.leave(ip)


def test_the_reclaimer_returns_once_per_storm_and_starts_the_next_peak_from_what_is_open() -> None:
    """After a storm the look that sees the count stop falling trims once, counts it, and resets the peak."""
    counts, telemetry, trim = PeerCounts(1000), Telemetry(), FakeTrim()
    reclaimer = Reclaimer(counts, POLICY, telemetry, trim=trim)
    _storm(counts, 300)
    assert reclaimer.check(1.0) and trim.calls == 1 and telemetry.memory_returns == 1
    assert counts.peak == counts.held == 1
    assert not reclaimer.check(1.5) and reclaimer.checks == 2


def test_the_reclaimer_waits_for_the_fall_to_stop_and_for_the_interval() -> None:
    """A look while connections are still closing does nothing; a second storm 5 s after a return waits."""
    counts, trim = PeerCounts(1000), FakeTrim()
    reclaimer = Reclaimer(counts, POLICY, Telemetry(), trim=trim)
    for i in range(200):
        counts.admit(f"203.0.113.{i}")
    reclaimer.check(0.5)
    for i in range(150):
        counts.leave(f"203.0.113.{i}")
    assert not reclaimer.check(1.0)  # fell from 200 to 50 since the last look: still falling
    assert reclaimer.check(1.5) and trim.calls == 1
    _storm(counts, 300)
    assert not reclaimer.check(6.5) and trim.calls == 1


def test_without_malloc_trim_the_reclaimer_still_collects() -> None:
    """Where the C library has no malloc_trim the return is a collection alone, and still counted."""
    counts, telemetry = PeerCounts(1000), Telemetry()
    reclaimer = Reclaimer(counts, POLICY, telemetry, trim=None)
    _storm(counts, 100)
    assert reclaimer.check(1.0) and telemetry.memory_returns == 1


def test_glibc_trim_and_rss_are_there_on_linux_glibc() -> None:
    """On this (glibc, Linux) machine the binding loads and the process's RSS reads as a positive figure."""
    trim = glibc_trim()
    assert trim is not None
    trim()
    resident = rss_mib()
    assert resident is not None and resident > 0
