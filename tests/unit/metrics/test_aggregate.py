"""The aggregation core: windows over cumulative reports, resets, staleness, totals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.metrics import aggregate
from services.metrics.aggregate import Aggregator
from services.metrics.window import MAX_SAMPLES, Outcome
from tests.unit.metrics.builders import backend, report

WINDOW = 10.0


def steady(agg: Aggregator, balancer: str, seconds: int, rps: int, vm: str = "vm-a", start: int = 1) -> None:
    """Feed one report a second at a constant rate, our clock in step with the balancer's."""
    for t in range(start, start + seconds):
        agg.observe(report(balancer, t, [backend(vm, rps * t)]), now=float(t))


def test_first_report_of_a_fresh_run_counts_in_full() -> None:
    """A run that started within the window has its first report's counters turned into a rate at once."""
    agg = Aggregator(WINDOW, forget_after_s=60)
    assert agg.observe(report("b1", 2, [backend("vm-a", 40)]), now=2.0) is Outcome.STARTED
    snap = agg.snapshot(2.0, report("b1", 2, []).at)
    assert snap.rps == pytest.approx(20.0)
    assert snap.vms[0].vm == "vm-a" and snap.vms[0].rps == pytest.approx(20.0)


def test_steady_load_gives_its_rate() -> None:
    """Reports at a constant 100 requests a second give 100 rps, whatever the phase of the window."""
    agg = Aggregator(WINDOW, forget_after_s=60)
    steady(agg, "b1", 30, rps=100)
    assert agg.snapshot(30.0, report("b1", 30, []).at).rps == pytest.approx(100.0)
    assert agg.snapshot(30.5, report("b1", 30, []).at).rps == pytest.approx(100.0)


def test_rate_follows_the_window() -> None:
    """Once traffic stops, the rate falls to zero after one window."""
    agg = Aggregator(WINDOW, forget_after_s=60)
    steady(agg, "b1", 20, rps=100)
    for t in range(21, 33):
        agg.observe(report("b1", t, [backend("vm-a", 2000)]), now=float(t))
    agg.expire(32.0)
    assert agg.snapshot(32.0, report("b1", 32, []).at).rps == 0.0


def test_balancers_add_up_per_vm() -> None:
    """Two balancers sending 50 rps each to the same VM give it 100 rps."""
    agg = Aggregator(WINDOW, forget_after_s=60)
    for t in range(1, 15):
        agg.observe(report("b1", t, [backend("vm-a", 50 * t)]), now=float(t))
        agg.observe(report("b2", t, [backend("vm-a", 50 * t)]), now=float(t))
    snap = agg.snapshot(14.0, report("b1", 14, []).at)
    assert snap.balancers == 2
    assert snap.vms[0].rps == pytest.approx(100.0)
    assert agg.totals()["vm-a"].requests == 1400


def test_new_started_at_is_a_new_run_and_totals_keep_growing() -> None:
    """A balancer restart (new started_at, counters from zero) keeps rates sane and counters monotonic."""
    agg = Aggregator(WINDOW, forget_after_s=60)
    steady(agg, "b1", 20, rps=10)
    assert agg.totals()["vm-a"].requests == 200
    outcome = agg.observe(report("b1", 21, [backend("vm-a", 5)], started_s=20), now=21.0)
    assert outcome is Outcome.STARTED
    assert agg.totals()["vm-a"].requests == 205
    assert agg.snapshot(21.0, report("b1", 21, []).at).rps == pytest.approx(5.0)


def test_counters_that_fall_within_a_run_are_a_reset() -> None:
    """Counters that go down under the same started_at start a new count instead of a negative rate."""
    agg = Aggregator(WINDOW, forget_after_s=60)
    steady(agg, "b1", 5, rps=10)
    assert agg.observe(report("b1", 6, [backend("vm-a", 3)]), now=6.0) is Outcome.RESET
    snap = agg.snapshot(6.0, report("b1", 6, []).at)
    assert snap.rps == pytest.approx(3.0)
    assert agg.totals()["vm-a"].requests == 53


def test_run_first_seen_mid_way_is_a_baseline() -> None:
    """A long-running balancer's first report gives no rate (its counts span unknown time) but full totals."""
    agg = Aggregator(WINDOW, forget_after_s=60)
    agg.observe(report("b1", 500, [backend("vm-a", 50_000)]), now=1.0)
    assert agg.snapshot(1.0, report("b1", 500, []).at).rps == 0.0
    assert agg.totals()["vm-a"].requests == 50_000
    agg.observe(report("b1", 501, [backend("vm-a", 50_070)]), now=2.0)
    assert agg.snapshot(2.0, report("b1", 501, []).at).rps == pytest.approx(70.0)


def test_silent_balancer_is_dropped_but_its_counts_stay() -> None:
    """A balancer silent for three intervals leaves the snapshot; its counters stay in the totals."""
    agg = Aggregator(WINDOW, forget_after_s=60)
    agg.observe(report("b1", 1, [backend("vm-a", 10, outstanding=4)]), now=1.0)
    assert agg.expire(3.5) == []
    assert agg.expire(4.5) == ["b1"]
    snap = agg.snapshot(4.5, report("b1", 4, []).at)
    assert snap.balancers == 0 and snap.outstanding == 0.0 and snap.vms == []
    assert agg.totals()["vm-a"].requests == 10
    assert agg.totals()["vm-a"].outstanding == 0


def test_gone_vms_are_forgotten_after_a_while() -> None:
    """Totals of a VM no live balancer reports are forgotten after forget_after_s (bounded memory)."""
    agg = Aggregator(WINDOW, forget_after_s=30)
    agg.observe(report("b1", 1, [backend("vm-a", 10)]), now=1.0)
    agg.expire(5.0)
    assert "vm-a" in agg.totals()
    agg.expire(40.0)
    assert agg.totals() == {}


def test_out_of_order_reports_are_ignored() -> None:
    """A report older than the latest of its run changes nothing."""
    agg = Aggregator(WINDOW, forget_after_s=60)
    steady(agg, "b1", 3, rps=10)
    assert agg.observe(report("b1", 2, [backend("vm-a", 999)]), now=4.0) is Outcome.OUT_OF_ORDER
    assert agg.observe(report("b1", 3, [backend("vm-a", 1)]), now=4.0) is Outcome.OUT_OF_ORDER
    assert agg.observe(report("b1", 9, [backend("vm-a", 5)], started_s=-5), now=4.0) is Outcome.OUT_OF_ORDER
    assert agg.totals()["vm-a"].requests == 30


def test_snapshots_count_the_reports_taken_so_a_repeat_shows() -> None:
    """`reports` counts reports taken (not out-of-order ones): two snapshots between reports carry the same count."""
    agg = Aggregator(WINDOW, forget_after_s=60)
    steady(agg, "b1", 3, rps=10)
    first = agg.snapshot(3.2, report("b1", 3, []).at)
    agg.observe(report("b1", 2, [backend("vm-a", 999)]), now=3.4)
    assert first.reports == 3 and agg.snapshot(3.6, report("b1", 3, []).at).reports == 3
    agg.observe(report("b1", 4, [backend("vm-a", 40)]), now=4.0)
    assert agg.snapshot(4.2, report("b1", 4, []).at).reports == 4


def test_error_rate_is_clamped_to_one() -> None:
    """Errors over requests give the error rate; a report claiming more errors than requests gives 1."""
    agg = Aggregator(WINDOW, forget_after_s=60)
    agg.observe(report("b1", 1, [backend("vm-a", 100, errors=5), backend("vm-b", 2, errors=9)]), now=1.0)
    snap = agg.snapshot(1.0, report("b1", 1, []).at)
    by_vm = {v.vm: v for v in snap.vms}
    assert by_vm["vm-a"].error_rate == pytest.approx(0.05)
    assert by_vm["vm-b"].error_rate == 1.0
    assert snap.error_rate == pytest.approx(14 / 102)


def test_latency_quantiles_come_from_merged_histograms() -> None:
    """p50 and p99 are read from the histograms of every balancer merged together."""
    agg = Aggregator(WINDOW, forget_after_s=60)
    agg.observe(report("b1", 1, [backend("vm-a", 90, latency_s=0.002)]), now=1.0)
    agg.observe(report("b2", 1, [backend("vm-b", 10, latency_s=0.2)]), now=1.0)
    snap = agg.snapshot(1.0, report("b1", 1, []).at)
    assert snap.p50_s is not None and 0.001 <= snap.p50_s <= 0.0025
    assert snap.p99_s is not None and 0.1 <= snap.p99_s <= 0.25
    assert {v.vm: v.p50_s is not None for v in snap.vms} == {"vm-a": True, "vm-b": True}


def test_outstanding_is_averaged_over_the_window() -> None:
    """Outstanding requests are the mean of the reports inside the window."""
    agg = Aggregator(WINDOW, forget_after_s=60)
    for t, outstanding in enumerate([2, 4, 6], start=1):
        agg.observe(report("b1", t, [backend("vm-a", t, outstanding=outstanding)]), now=float(t))
    assert agg.snapshot(3.0, report("b1", 3, []).at).outstanding == pytest.approx(4.0)
    assert agg.totals()["vm-a"].outstanding == 6


def test_history_per_run_is_bounded_by_the_window() -> None:
    """A run keeps only the reports inside the window plus one baseline, however long it runs."""
    agg = Aggregator(WINDOW, forget_after_s=60)
    steady(agg, "b1", 200, rps=1)
    assert len(agg.runs["b1"].samples) <= WINDOW + 2
    assert MAX_SAMPLES >= 1000


def test_too_many_balancers_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reports from more balancers than MAX_RUNS are refused, the known ones still count."""
    monkeypatch.setattr(aggregate, "MAX_RUNS", 2)
    agg = Aggregator(WINDOW, forget_after_s=60)
    agg.observe(report("b1", 1, [backend("vm-a", 1)]), now=1.0)
    agg.observe(report("b2", 1, [backend("vm-a", 1)]), now=1.0)
    assert agg.observe(report("b3", 1, [backend("vm-a", 1)]), now=1.0) is Outcome.REFUSED
    assert agg.observe(report("b1", 2, [backend("vm-a", 2)]), now=2.0) is Outcome.ACCEPTED
    assert set(agg.runs) == {"b1", "b2"}


@given(st.lists(st.tuples(st.integers(0, 1000), st.booleans()), min_size=1, max_size=40))
def test_totals_never_go_down_and_rates_never_negative(steps: list[tuple[int, bool]]) -> None:
    """Whatever sequence of restarts and counter values arrives, totals only grow and rates stay >= 0."""
    agg = Aggregator(WINDOW, forget_after_s=1e6)
    started, previous = 0.0, 0
    for t, (requests, restart) in enumerate(steps, start=1):
        started = t - 0.5 if restart else started
        agg.observe(report("b1", t, [backend("vm-a", requests)], started_s=started), now=float(t))
        agg.expire(float(t))
        total = agg.totals()["vm-a"].requests
        assert total >= previous
        previous = total
        snap = agg.snapshot(float(t), report("b1", t, []).at)
        assert snap.rps >= 0 and all(v.rps >= 0 for v in snap.vms)


def test_a_balancer_claiming_a_huge_interval_is_still_dropped() -> None:
    """A balancer that claims an hour-long interval is dropped after STALE_AT_MOST_S of silence anyway."""
    agg = Aggregator(WINDOW, forget_after_s=600)
    slow = report("b1", 1, [backend("vm-a", 1)]).model_copy(update={"interval_s": 3600})
    agg.observe(slow, now=1.0)
    assert agg.expire(1.0 + aggregate.STALE_AT_MOST_S - 1) == []
    assert agg.expire(1.0 + aggregate.STALE_AT_MOST_S + 1) == ["b1"]
