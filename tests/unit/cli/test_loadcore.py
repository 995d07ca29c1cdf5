"""The arithmetic of `quicfleet load`: schedule, error kinds, backends, quantiles, summary and lines."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ops.cli.loadcore import (
    Backend,
    ErrorKind,
    Latencies,
    Plan,
    RateSchedule,
    Reply,
    Tally,
    backend_of,
    check_mode,
    classify,
    duration_text,
    failed,
    failure_line,
    live_line,
    outcome,
    parse_target,
    server_address,
    summarize,
    summary_text,
)

VM_A = {"x-quicfleet-backend": "vm-a", "x-quicfleet-vm": "0e69cc8e-0000-4000-8000-000000000001"}


def plan(rate: float | None = 50.0, concurrency: int | None = None) -> Plan:
    return Plan(parse_target("https://127.0.0.1:8443/"), duration_s=3.0, rate=rate, concurrency=concurrency)


def ok(backend: str = "vm-a", address: str = "10.0.0.1:443") -> Reply:
    """A 200 from a template backend, named by the balancer."""
    return Reply(200, {"x-quicfleet-backend": backend}, f"Server Address: {address}\n")


def test_rate_schedule_spaces_requests_evenly_over_the_duration() -> None:
    """50 per second for 3 s is 150 requests, the k-th due at k/50 s."""
    schedule = RateSchedule(50, 3)
    assert schedule.total == 150
    assert [schedule.at(k) for k in (0, 1, 149)] == [0.0, 0.02, 2.98]


def test_rate_schedule_due_counts_what_a_late_sender_must_catch_up() -> None:
    """Request 0 is due at once; after a stall every overdue request is due, never more than the total."""
    schedule = RateSchedule(10, 1)
    assert schedule.due(-0.1) == 0
    assert schedule.due(0.0) == 1
    assert schedule.due(0.35) == 4
    assert schedule.due(60) == 10
    assert RateSchedule(100, 1).due(0.29) == 30, "0.29 * 100 is 28.999999999999996 in floating point"


def test_rate_schedule_sends_at_least_one_request() -> None:
    """A rate and duration whose product is below one still send one request; 100 * 0.57 s is 57, not 56."""
    assert RateSchedule(0.5, 1).total == 1
    assert RateSchedule(100, 0.57).total == 57


@given(st.floats(0.1, 5000), st.floats(0.1, 60), st.floats(0, 70))
def test_due_never_runs_ahead_of_the_schedule(rate: float, duration: float, elapsed: float) -> None:
    """Every request counted as due has a start time at (or within rounding of) the elapsed time or before."""
    schedule = RateSchedule(rate, duration)
    due = schedule.due(elapsed)
    assert 0 < due <= schedule.total
    assert schedule.at(due - 1) <= elapsed + 1e-6


def test_status_classes_are_error_kinds() -> None:
    """Below 400 is success, 4xx and 5xx are their kinds, and no status at all means the stream was reset."""
    assert [classify(s) for s in (200, 204, 302)] == [None, None, None]
    assert classify(404) is ErrorKind.CLIENT
    assert classify(503) is ErrorKind.SERVER
    assert classify(0) is ErrorKind.RESET


def test_a_reset_stream_fails_even_with_a_status() -> None:
    """A response whose stream was reset half-way counts as reset, not as the 200 its head said."""
    assert outcome(Reply(200, reset=True), 0.01).error is ErrorKind.RESET
    assert outcome(Reply(200), 0.01).error is None


def test_backend_from_headers_and_body() -> None:
    """The VM name, UUID and `Server Address` all go into the backend; the label puts the name first."""
    backend = backend_of(VM_A, "Server Address: 10.77.0.127:443\nServer Name: x\n")
    assert backend == Backend("vm-a", VM_A["x-quicfleet-vm"], "10.77.0.127:443")
    assert backend.label() == "vm-a (10.77.0.127:443)"
    assert backend_of({}, "Server Address: 10.0.0.9:443").label() == "10.0.0.9:443"  # type: ignore[union-attr]


def test_an_answer_naming_no_backend_has_none() -> None:
    """The balancer's own answers (no header, another body) are counted without a backend."""
    assert backend_of({}, "no backend is ready") is None
    assert server_address("Server Address:   \n") is None


def test_target_from_url_and_path() -> None:
    """The URL's host, port and path; `--path` replaces the path; the scheme may be left out."""
    target = parse_target("https://127.0.0.1:8443/a?b=1")
    assert (target.host, target.port, target.path, target.authority) == ("127.0.0.1", 8443, "/a?b=1", "127.0.0.1:8443")
    assert parse_target("127.0.0.1:8443", "x").url == "https://127.0.0.1:8443/x"
    assert parse_target("https://[::1]/").url == "https://[::1]:443/"


@pytest.mark.parametrize(("url", "words"), [
    ("http://127.0.0.1:8443/", "needs an https:// URL"),
    ("https://127.0.0.1:99999/", "port"),
    ("https:///x", "no host"),
])
def test_bad_targets_say_what_is_wrong(url: str, words: str) -> None:
    """A URL that cannot be an HTTP/3 endpoint is a ValueError naming the problem."""
    with pytest.raises(ValueError, match=words):
        parse_target(url)


def test_exactly_one_loop_is_asked_for() -> None:
    """--rate alone is the open loop, --concurrency alone the closed one; neither or both is refused."""
    assert check_mode(5, None) == "rate"
    assert check_mode(None, 3) == "concurrency"
    for rate, concurrency in ((None, None), (5, 3)):
        with pytest.raises(ValueError, match="exactly one"):
            check_mode(rate, concurrency)


def test_quantiles_are_within_one_percent() -> None:
    """Over 1..1000 ms the p50, p95 and p99 are within 1 % of the exact values, and max is exact."""
    latencies = Latencies()
    for ms in range(1, 1001):
        latencies.record(ms / 1000)
    for q, exact in ((0.5, 0.5), (0.95, 0.95), (0.99, 0.99), (1.0, 1.0)):
        value = latencies.quantile(q)
        assert value is not None and exact <= value <= exact * 1.01
    assert latencies.max_s == 1.0 and latencies.mean() == pytest.approx(0.5005)


@given(st.lists(st.floats(1e-7, 100), min_size=1, max_size=200), st.floats(0, 1))
def test_a_quantile_lies_between_the_smallest_and_largest_sample(samples: list[float], q: float) -> None:
    """Whatever the samples, a quantile is never below the smallest (by more than a bucket) nor above the largest."""
    latencies = Latencies()
    for sample in samples:
        latencies.record(sample)
    value = latencies.quantile(q)
    assert value is not None and min(samples) * 0.99 <= value <= max(samples)


def test_empty_latencies_have_no_quantile() -> None:
    """With no successful request there is nothing to report, rather than a zero."""
    assert Latencies().quantile(0.5) is None and Latencies().mean() is None


def test_tally_counts_kinds_statuses_backends_and_only_successful_latency() -> None:
    """Errors by kind, statuses and backends are counted; a 503's latency stays out of the quantiles."""
    tally = Tally()
    tally.record(outcome(ok(), 0.002))
    tally.record(outcome(Reply(503, {"x-quicfleet-backend": "vm-b"}), 0.0001))
    tally.record(failed(ErrorKind.TIMEOUT))
    tally.record(failed(ErrorKind.DROPPED))
    assert (tally.requests, tally.failed, tally.sent) == (4, 3, 3)
    assert tally.errors == {ErrorKind.SERVER: 1, ErrorKind.TIMEOUT: 1, ErrorKind.DROPPED: 1}
    assert tally.statuses == {200: 1, 503: 1}
    assert {b.name: n for b, n in tally.backends.items()} == {"vm-a": 1, "vm-b": 1}
    assert tally.latency.total == 1


def test_summary_lists_every_error_kind_and_backends_busiest_first() -> None:
    """The JSON summary has zeros for kinds that did not occur and the busiest backend first."""
    tally = Tally()
    for index in range(3):
        tally.record(outcome(ok("vm-b" if index else "vm-a"), 0.001))
    tally.record(outcome(Reply(502), 0.001))
    summary = summarize(plan(), tally, elapsed_s=2.0)
    data = json.loads(summary.model_dump_json())
    assert data["errors"] == {"5xx": 1, "4xx": 0, "timeout": 0, "connection": 0, "reset": 0, "dropped": 0}
    assert (data["requests"], data["ok"], data["failed"], data["achieved_rps"]) == (4, 3, 1, 2.0)
    assert [(b["name"], b["requests"]) for b in data["backends"]] == [("vm-b", 2), ("vm-a", 1)]
    assert data["statuses"] == {"200": 3, "502": 1}
    assert data["latency_ms"]["p50"] == pytest.approx(1.0, rel=0.01)
    assert (data["mode"], data["rate"], data["concurrency"], data["url"]) == (
        "rate", 50.0, None, "https://127.0.0.1:8443/")


def test_failure_line_only_when_a_request_failed() -> None:
    """No line (exit 0) when all succeeded; else how many failed and of which kinds (exit 1)."""
    tally = Tally()
    tally.record(outcome(ok(), 0.001))
    assert failure_line(summarize(plan(), tally, 1.0)) is None
    tally.record(failed(ErrorKind.CONNECTION))
    tally.record(failed(ErrorKind.TIMEOUT))
    assert failure_line(summarize(plan(), tally, 1.0)) == "2 of 3 requests failed (timeout 1, connection 1)"


def test_summary_text_for_people() -> None:
    """Four lines: counts and rate, latency, errors, backends with their addresses."""
    tally = Tally()
    tally.record(outcome(ok(), 0.0021))
    tally.record(outcome(ok("vm-b", "10.0.0.2:443"), 0.0021))
    text = summary_text(summarize(plan(concurrency=2, rate=None), tally, 0.5))
    assert text.splitlines() == [
        "2 requests in 0.50 s (4.0/s): 2 ok, 0 failed",
        "latency p50 2.10 ms, p95 2.10 ms, p99 2.10 ms, max 2.10 ms",
        "errors 0",
        "backends vm-a (10.0.0.1:443) 1, vm-b (10.0.0.2:443) 1",
    ]


def test_live_line_shows_the_last_second_and_the_runs_errors() -> None:
    """Rate, quantiles and backends come from the window; the error count is the whole run's."""
    window, total = Tally(), Tally()
    for _ in range(50):
        result = outcome(ok(), 0.004)
        window.record(result)
        total.record(result)
    total.record(failed(ErrorKind.SERVER))
    line = live_line(12.2, window, 1.0, total, in_flight=3)
    assert line == ("   12s     50.0 req/s  p50 4.00 ms  p95 4.00 ms  p99 4.00 ms  in flight 3  "
                    "errors 1 (5xx 1)  backends vm-a (10.0.0.1:443) 50")


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "-"), (0.00084, "0.84 ms"), (0.0123, "12.3 ms"), (0.4567, "457 ms"), (1.25, "1.25 s"),
])
def test_durations_for_people(seconds: float | None, text: str) -> None:
    """Three digits whatever the size, milliseconds below a second."""
    assert duration_text(seconds) == text
