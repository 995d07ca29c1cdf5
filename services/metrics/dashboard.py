"""The dashboard's JSON: history as columns (what uPlot plots directly) plus the latest numbers.

Pure: built from `MetricsState`, so the page shows exactly what `fleet.load` and `/metrics` say.
"""

from __future__ import annotations

from typing import Any

from services.metrics.fleet import SHOWN_STATES, HistoryPoint
from services.metrics.state import MetricsState

MAX_DECISIONS_SHOWN = 20


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def series(history: list[HistoryPoint]) -> dict[str, list[Any]]:
    """Columns over the history: time (epoch s), load, latency (ms), VMs per state, desired."""
    columns: dict[str, list[Any]] = {
        "t": [p.at for p in history],
        "rps": [round(p.rps, 3) for p in history],
        "errors_ps": [round(p.errors_ps, 3) for p in history],
        "error_rate": [round(p.error_rate, 5) for p in history],
        "outstanding": [round(p.outstanding, 3) for p in history],
        "p50_ms": [_ms(p.p50_s) for p in history],
        "p95_ms": [_ms(p.p95_s) for p in history],
        "p99_ms": [_ms(p.p99_s) for p in history],
        "desired": [p.desired for p in history],
    }
    for state in SHOWN_STATES:
        columns[f"vms_{state.value}"] = [p.states.get(state.value, 0) for p in history]
    return columns


def payload(state: MetricsState, max_points: int | None = None, since: float | None = None) -> dict[str, Any]:
    """Everything the page needs in one poll; `max_points` keeps only the newest history points.

    `since` (the newest time the page holds) sends only later points: a page polling every
    second then fetches one point, not its whole history, and appends it.
    """
    history = [p for p in state.fleet.history if since is None or p.at > since]
    if max_points is not None:
        history = history[-max_points:] if max_points > 0 else []
    latest = state.latest
    decisions = list(state.fleet.decisions)[-MAX_DECISIONS_SHOWN:]
    return {
        "window_s": state.aggregator.window_s,
        "series": series(history),
        "latest": None if latest is None else latest.model_dump(mode="json"),
        "states": state.fleet.state_counts(),
        "desired": state.fleet.desired,
        "balancers": len(state.aggregator.runs),
        "decisions": [d.model_dump(mode="json") for d in reversed(decisions)],
    }
