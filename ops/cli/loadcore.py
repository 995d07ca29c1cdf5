"""The arithmetic of `quicfleet load`, apart from sockets and clocks: one import for all of it.

`load.py` feeds it times (seconds since the run began) and what each request ended in; everything
is a plain value or a counter, so the schedule, the error kinds, the quantiles and the summary are
tested with numbers rather than with a balancer. It lives in four modules, re-exported here so
callers and tests keep one name to import from: `loadplan` (target, plan, schedule), `loadoutcome`
(replies, error kinds, backends), `loadstats` (quantiles, tallies, the summary) and `loadtext`
(the live line and the summary for people).
"""

from __future__ import annotations

from ops.cli.loadoutcome import (
    BACKEND_HEADER,
    BODY_HEAD_BYTES,
    SERVER_ADDRESS,
    Backend,
    ErrorKind,
    Outcome,
    Reply,
    backend_of,
    classify,
    failed,
    outcome,
    server_address,
)
from ops.cli.loadplan import Mode, Plan, RateSchedule, Target, check_mode, parse_target
from ops.cli.loadstats import BackendCount, Latencies, LatencySummary, LoadSummary, Tally, summarize
from ops.cli.loadtext import (
    backends_text,
    duration_text,
    errors_text,
    failure_line,
    kinds_text,
    live_line,
    summary_text,
)

__all__ = [
    "BACKEND_HEADER",
    "BODY_HEAD_BYTES",
    "SERVER_ADDRESS",
    "Backend",
    "BackendCount",
    "ErrorKind",
    "Latencies",
    "LatencySummary",
    "LoadSummary",
    "Mode",
    "Outcome",
    "Plan",
    "RateSchedule",
    "Reply",
    "Tally",
    "Target",
    "backend_of",
    "backends_text",
    "check_mode",
    "classify",
    "duration_text",
    "errors_text",
    "failed",
    "failure_line",
    "kinds_text",
    "live_line",
    "outcome",
    "parse_target",
    "server_address",
    "summarize",
    "summary_text",
]
