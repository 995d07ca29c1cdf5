"""Drain bookkeeping and the retry budget."""

from __future__ import annotations

from services.balancer.core.drain import DrainBook, DrainOver
from services.balancer.core.retry import RetryBudget


def test_drain_ends_when_nothing_is_in_flight() -> None:
    """A drain is over as soon as the VM has no outstanding request, and is then forgotten."""
    book = DrainBook()
    book.start("vm-a", now=0.0, deadline_s=30, request_id="r1")
    inflight = {"vm-a": 2}
    assert book.finished(1.0, inflight.__getitem__) == []
    inflight["vm-a"] = 0
    assert book.finished(2.0, inflight.__getitem__) == [DrainOver("vm-a", timed_out=False, request_ids=("r1",))]
    assert "vm-a" not in book


def test_drain_times_out_at_its_deadline() -> None:
    """A VM still busy at the deadline ends its drain with timed_out set."""
    book = DrainBook()
    book.start("vm-a", now=0.0, deadline_s=5, request_id=None)
    assert book.finished(4.9, lambda vm: 1) == []
    assert book.finished(5.0, lambda vm: 1) == [DrainOver("vm-a", timed_out=True, request_ids=(None,))]


def test_a_second_drain_request_joins_and_keeps_the_earlier_deadline() -> None:
    """Two requests to drain one VM are both answered, at the earlier of their deadlines."""
    book = DrainBook()
    book.start("vm-a", now=0.0, deadline_s=10, request_id="r1")
    book.start("vm-a", now=1.0, deadline_s=30, request_id="r2")
    (over,) = book.finished(10.0, lambda vm: 3)
    assert over.request_ids == ("r1", "r2") and over.timed_out


def test_cancelled_drain_is_forgotten() -> None:
    """Cancelling a drain (the VM became ready again or is gone) produces no report."""
    book = DrainBook()
    book.start("vm-a", now=0.0, deadline_s=1)
    book.cancel("vm-a")
    assert book.finished(5.0, lambda vm: 0) == [] and len(book) == 0


def test_retry_budget_allows_a_share_of_requests() -> None:
    """With ratio 0.2 and min 3, 100 requests allow 23 retries in the window and no more."""
    budget = RetryBudget(ratio=0.2, window_s=10, min_retries=3)
    for _ in range(100):
        budget.request(1.0)
    allowed = sum(budget.try_retry(2.0) for _ in range(50))
    assert allowed == 23


def test_retry_budget_refills_in_later_windows() -> None:
    """Retries spent long ago do not count against new requests."""
    budget = RetryBudget(ratio=0.5, window_s=1, min_retries=0)
    budget.request(0.0)
    budget.request(0.0)
    assert budget.try_retry(0.1) and not budget.try_retry(0.2)
    budget.request(5.0)
    budget.request(5.0)
    assert budget.try_retry(5.1)


def test_retry_budget_with_no_requests_allows_only_the_minimum() -> None:
    """With no recent requests only `min_retries` retries pass."""
    budget = RetryBudget(ratio=0.2, window_s=10, min_retries=2)
    assert [budget.try_retry(0.0) for _ in range(3)] == [True, True, False]
