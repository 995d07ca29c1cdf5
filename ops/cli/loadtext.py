"""`quicfleet load` for people: the live line refreshed each second, the final summary, the failure line.

Only formatting of what `loadstats` counted; separate so the wording can change without touching
the counting, and so `--json` (which prints the summary model itself) never goes through it.
"""

from __future__ import annotations

from collections.abc import Mapping

from ops.cli.loadoutcome import Backend
from ops.cli.loadstats import LoadSummary, Tally


def duration_text(seconds: float | None) -> str:
    """A latency for people, three digits: `0.84 ms`, `12.3 ms`, `1.25 s`; `-` when there is none."""
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    ms = seconds * 1000
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def kinds_text(errors: Mapping[str, int]) -> str:
    """The kinds that occurred, with their counts: `5xx 2, timeout 1`."""
    return ", ".join(f"{kind} {n}" for kind, n in errors.items() if n)


def errors_text(errors: Mapping[str, int]) -> str:
    """`0`, or the total with its kinds: `3 (5xx 2, timeout 1)`."""
    total = sum(errors.values())
    return f"{total} ({kinds_text(errors)})" if total else "0"


def backends_text(backends: Mapping[str, int]) -> str:
    """`vm-a 25, vm-b 24`, busiest first; `none` when no answer named a backend."""
    ordered = sorted(backends.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{label} {n}" for label, n in ordered) or "none"


def live_line(elapsed_s: float, window: Tally, window_s: float, total: Tally, in_flight: int) -> str:
    """The line refreshed each second: the last second's rate, latency and backends, the run's errors."""
    rate = window.sent / window_s if window_s > 0 else 0.0
    q = window.latency.quantile
    backends = backends_text({b.label(): n for b, n in window.backends.items()})
    errors = errors_text({kind.value: n for kind, n in total.errors.items()})
    return (f"{elapsed_s:5.0f}s  {rate:7.1f} req/s  p50 {duration_text(q(0.5))}  p95 {duration_text(q(0.95))}  "
            f"p99 {duration_text(q(0.99))}  in flight {in_flight}  errors {errors}  backends {backends}")


def summary_text(summary: LoadSummary) -> str:
    """The final summary for people, four lines."""
    ms = summary.latency_ms
    latency = ", ".join(f"{name} {duration_text(None if v is None else v / 1000)}" for name, v in (
        ("p50", ms.p50), ("p95", ms.p95), ("p99", ms.p99), ("max", ms.max)))
    backends = {Backend(b.name, b.uuid, b.address).label(): b.requests for b in summary.backends}
    stopped = " (stopped early)" if summary.interrupted else ""
    return "\n".join([
        f"{summary.requests} requests in {summary.elapsed_s:.2f} s ({summary.achieved_rps:.1f}/s){stopped}: "
        f"{summary.ok} ok, {summary.failed} failed",
        f"latency {latency}",
        f"errors {errors_text(summary.errors)}",
        f"backends {backends_text(backends)}",
    ])


def failure_line(summary: LoadSummary) -> str | None:
    """The one-line reason to exit non-zero (any request failed), or None when every request succeeded."""
    if not summary.failed:
        return None
    return f"{summary.failed} of {summary.requests} requests failed ({kinds_text(summary.errors)})"
