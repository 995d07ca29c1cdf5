"""The bench reads h2load's report: rate, counts, request-time percentiles and QPACK savings."""

from __future__ import annotations

import pytest

from bench._h2load import parse
from bench._shares import Share

REPORT = """
finished in 91.09ms, 10977.91 req/s, 599.12KB/s
requests: 1000 total, 1000 started, 1000 done, 972 succeeded, 28 failed, 0 errored, 0 timeout
status codes: 1000 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 54.57KB (55880) total, 9.89KB (10127) headers (space savings 93.55%), 26.37KB (27000) data
                 min         max         median     p95        p99        mean         sd        +/- sd
request     :      120us      4.56ms      612us     2.10ms     3.01ms      700us       300us    70.19%
"""


def test_a_report_is_read_whole() -> None:
    """Each figure lands in its field, milliseconds and microseconds alike."""
    run = parse(REPORT, Share("h2load", 0.05, 0.1, "1"))
    assert run.rps == pytest.approx(10977.91)
    assert (run.done, run.failed, run.errored) == (1000, 28, 0)
    assert run.p50_ms == pytest.approx(0.612)
    assert run.p99_ms == pytest.approx(3.01)
    assert run.header_savings == pytest.approx(93.55)


def test_a_report_without_results_is_an_error() -> None:
    """An h2load that could not connect prints no result line; the bench says so instead of a zero."""
    with pytest.raises(RuntimeError, match="no result"):
        parse("no protocol was negotiated\n", Share("h2load", 0, 1, "1"))
