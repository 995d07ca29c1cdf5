"""The arithmetic of `quicfleet load`, apart from sockets and clocks.

`load.py` feeds this module times (seconds since the run began) and what each request ended in;
everything here is a plain value or a counter, so the schedule, the error kinds, the quantiles and
the summary are tested with numbers rather than with a balancer.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel

from shared.contract.base import IDENTITY_HEADER

BACKEND_HEADER = "x-quicfleet-backend"
"""The response header in which the balancer names the VM that answered."""
SERVER_ADDRESS = "Server Address:"
"""How the template's backends start the body line that says which address answered."""
BODY_HEAD_BYTES = 512
"""How much of each body is kept: enough for `Server Address`, never a whole large answer."""

Mode = Literal["rate", "concurrency"]


class ErrorKind(StrEnum):
    """Why a request failed; counted apart, so an overload reads differently from an outage."""

    SERVER = "5xx"
    CLIENT = "4xx"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    """No QUIC connection to send it on, or the connection closed before the answer."""
    RESET = "reset"
    """The stream was reset (or ended) before a response came: the balancer refused it."""
    DROPPED = "dropped"
    """Never sent: it fell due while `max_in_flight` requests were still waiting (open loop)."""


@dataclass(frozen=True)
class Target:
    """Where the requests go: the QUIC endpoint and the request's authority and path."""

    host: str
    port: int
    path: str

    @property
    def authority(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.authority}{self.path}"


def parse_target(url: str, path: str | None = None) -> Target:
    """`https://HOST[:PORT][/PATH]` (the scheme may be left out); `path` replaces the URL's path.

    ValueError names what is wrong: HTTP/3 is always TLS, so only https makes sense.
    """
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if parts.scheme != "https":
        raise ValueError(f"{url}: HTTP/3 needs an https:// URL")
    try:
        port = parts.port or 443
    except ValueError:
        raise ValueError(f"{url}: the port is not a number from 0 to 65535") from None
    if not parts.hostname:
        raise ValueError(f"{url}: no host")
    if path is None:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.hostname, port, "/" + path.lstrip("/"))


@dataclass(frozen=True)
class Plan:
    """What to run: where, how hard (a rate or a concurrency), for how long, and within what limits."""

    target: Target
    duration_s: float
    rate: float | None = None
    concurrency: int | None = None
    max_in_flight: int = 1000
    connections: int = 2
    timeout_s: float = 5.0
    verify: bool = False
    ca_file: Path | None = None

    @property
    def mode(self) -> Mode:
        return "rate" if self.rate is not None else "concurrency"


def check_mode(rate: float | None, concurrency: int | None) -> Mode:
    """Exactly one of the two loops; ValueError (a usage error) for neither or both."""
    if (rate is None) == (concurrency is None):
        raise ValueError("give exactly one of --rate (open loop) or --concurrency (closed loop)")
    return "rate" if rate is not None else "concurrency"


@dataclass(frozen=True)
class RateSchedule:
    """The open loop: request k starts at k / rate seconds, whatever happened to the ones before.

    Starting on schedule rather than when an answer comes back is what makes a slow balancer show
    up as latency and errors; a closed loop would quietly send less instead.
    """

    rate: float
    duration_s: float

    @property
    def total(self) -> int:
        """How many requests the run sends: at least one; the epsilon makes 100 * 0.57 (56.99999999999999) 57."""
        return max(1, math.floor(self.rate * self.duration_s + 1e-9))

    def at(self, index: int) -> float:
        """When request `index` (from 0) is due, in seconds from the start."""
        return index / self.rate

    def due(self, elapsed_s: float) -> int:
        """How many requests are due by `elapsed_s`: those a late sender must catch up on at once."""
        if elapsed_s < 0:
            return 0
        return min(self.total, math.floor(elapsed_s * self.rate + 1e-9) + 1)


@dataclass(frozen=True)
class Backend:
    """Who answered: the VM name the balancer adds, the UUID the VM sends, the address its body names."""

    name: str | None = None
    uuid: str | None = None
    address: str | None = None

    def label(self) -> str:
        """The VM's name (else its UUID, else its address), with the address beside it when both are known."""
        main = self.name or self.uuid or self.address or "?"
        return f"{main} ({self.address})" if self.address and main != self.address else main


def server_address(body_head: str) -> str | None:
    """The `Server Address: <ip>:<port>` a template backend puts in its body, if there is one."""
    for line in body_head.splitlines():
        if line.startswith(SERVER_ADDRESS):
            return line[len(SERVER_ADDRESS):].strip()[:80] or None
    return None


def backend_of(headers: Mapping[str, str], body_head: str) -> Backend | None:
    """The backend a response names in its headers and body; None when it names none (the balancer's own)."""
    found = Backend(headers.get(BACKEND_HEADER), headers.get(IDENTITY_HEADER), server_address(body_head))
    return None if found == Backend() else found


@dataclass(frozen=True)
class Reply:
    """What came back on one stream: the status (0: none), the headers kept, the start of the body."""

    status: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)
    body_head: str = ""
    reset: bool = False


@dataclass(frozen=True)
class Outcome:
    """How one request ended: its status (0 when none came), why it failed, its latency when answered."""

    status: int = 0
    error: ErrorKind | None = None
    latency_s: float | None = None
    backend: Backend | None = None


def classify(status: int) -> ErrorKind | None:
    """None for a status that counts as done (below 400); a stream that ended with none was reset."""
    if status >= 500:
        return ErrorKind.SERVER
    if status >= 400:
        return ErrorKind.CLIENT
    if status < 100:
        return ErrorKind.RESET
    return None


def outcome(reply: Reply, latency_s: float) -> Outcome:
    """A reply as counted: a reset stream failed whatever it had received, anything else by its status."""
    error = ErrorKind.RESET if reply.reset else classify(reply.status)
    return Outcome(reply.status, error, latency_s, backend_of(reply.headers, reply.body_head))


def failed(kind: ErrorKind) -> Outcome:
    """A request that got no response at all."""
    return Outcome(error=kind)


class Latencies:
    """Latency quantiles within 1 % from a bounded set of log-spaced buckets (~1,900 from 1 us to 100 s).

    shared/histogram.py's buckets are 2-2.5x apart: right for adding up every balancer's counts,
    too coarse to tell 3 ms from 4 ms at the p99 of one run; keeping every sample instead would grow
    with the run.
    """

    GROWTH = 1.01
    FLOOR_S = 1e-6

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.total = 0
        self.sum_s = 0.0
        self.max_s = 0.0

    def record(self, seconds: float) -> None:
        self.counts[self._bucket(seconds)] += 1
        self.total += 1
        self.sum_s += seconds
        self.max_s = max(self.max_s, seconds)

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0..1) by nearest rank: its bucket's upper bound, never above the largest seen."""
        if not self.total:
            return None
        rank = max(1, math.ceil(q * self.total))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return min(self.FLOOR_S * self.GROWTH**index, self.max_s)
        return self.max_s

    def mean(self) -> float | None:
        return self.sum_s / self.total if self.total else None

    def _bucket(self, seconds: float) -> int:
        if seconds <= self.FLOOR_S:
            return 0
        return math.ceil(math.log(seconds / self.FLOOR_S, self.GROWTH))


@dataclass
class Tally:
    """What a span of the run ended in: the whole run for the summary, the last second for the live line."""

    requests: int = 0
    errors: Counter[ErrorKind] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    backends: Counter[Backend] = field(default_factory=Counter)
    latency: Latencies = field(default_factory=Latencies)

    def record(self, result: Outcome) -> None:
        """Count one request; only a successful one's latency goes into the quantiles."""
        self.requests += 1
        if result.error is not None:
            self.errors[result.error] += 1
        if result.status:
            self.statuses[result.status] += 1
        if result.backend is not None:
            self.backends[result.backend] += 1
        if result.error is None and result.latency_s is not None:
            self.latency.record(result.latency_s)

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def sent(self) -> int:
        """Requests that went out (all but the dropped)."""
        return self.requests - self.errors[ErrorKind.DROPPED]


class LatencySummary(BaseModel):
    """Latency of the successful requests, in milliseconds (None when none succeeded)."""

    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None
    mean: float | None


class BackendCount(BaseModel):
    """One backend and how many requests it answered (any status)."""

    name: str | None
    uuid: str | None
    address: str | None
    requests: int


class LoadSummary(BaseModel):
    """The result of a run, as `--json` prints it: `requests` = `ok` + `failed`, each failure by kind."""

    url: str
    mode: Mode
    rate: float | None
    concurrency: int | None
    duration_s: float
    elapsed_s: float
    requests: int
    ok: int
    failed: int
    achieved_rps: float
    errors: dict[str, int]
    statuses: dict[str, int]
    latency_ms: LatencySummary
    backends: list[BackendCount]
    interrupted: bool = False


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def summarize(plan: Plan, tally: Tally, elapsed_s: float, interrupted: bool = False) -> LoadSummary:
    """The summary of a run that took `elapsed_s` (to its last answer); every error kind is listed, zeros too."""
    latency = tally.latency
    backends = sorted(tally.backends.items(), key=lambda item: (-item[1], item[0].label()))
    return LoadSummary(
        url=plan.target.url, mode=plan.mode, rate=plan.rate, concurrency=plan.concurrency,
        duration_s=plan.duration_s, elapsed_s=round(elapsed_s, 3), requests=tally.requests,
        ok=tally.requests - tally.failed, failed=tally.failed,
        achieved_rps=round(tally.sent / elapsed_s, 2) if elapsed_s > 0 else 0.0,
        errors={kind.value: tally.errors[kind] for kind in ErrorKind},
        statuses={str(status): n for status, n in sorted(tally.statuses.items())},
        latency_ms=LatencySummary(
            p50=_ms(latency.quantile(0.5)), p95=_ms(latency.quantile(0.95)), p99=_ms(latency.quantile(0.99)),
            max=_ms(latency.max_s if latency.total else None), mean=_ms(latency.mean()),
        ),
        backends=[BackendCount(name=b.name, uuid=b.uuid, address=b.address, requests=n) for b, n in backends],
        interrupted=interrupted,
    )


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
