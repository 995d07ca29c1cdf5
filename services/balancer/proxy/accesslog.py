"""The access log: one structured line per finished request, written off the request path.

Rendering a structlog line (processors, JSON, a write to stdout) costs ~15 us, several times the
rest of a request's bookkeeping. So the request path only appends a tuple of plain values to a
buffer (~0.2 us), and a timer a little later turns the batch into `balancer.access` lines: the
response goes out first, and under load one timer serves hundreds of requests. The writing
still takes loop time, so `BALANCER_ACCESS_LOG_SAMPLE` thins out the successful requests; a 5xx,
a reset or any request with `flags` (`core.flags`: no VM, connect failed, timeout, retried, reset)
is always logged, being the line someone will look for. Each line also names the upstream address
of the last attempt, the request body bytes received (`bytes_in`) and the user agent.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import time
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from services.balancer.core.backends import Backend
from services.balancer.core.headers import Headers
from services.balancer.core.upstream import UpstreamRequest

log = structlog.get_logger("balancer.access")

FLUSH_S = 0.05
"""How long a finished request waits at most before its line is written."""

Record = tuple[
    float, bytes, str, str, bytes, bytes, bytes, int, int, str, int, float | None, float, str, str, Backend | None,
    int, Headers,
]
"""start, request id, client ip, protocol, method, authority, path, status, bytes, vm, attempts,
first byte, end (loop times), reset_by, flags, upstream (last attempt's backend), bytes in, request
headers (the user agent is looked up at flush time, off the request path)."""


class Finished(Protocol):
    """A finished request as the books read it (an exchange; declared here so the books never import it)."""

    request: UpstreamRequest
    request_id: bytes
    client_ip: str
    protocol: str
    started_at: float
    first_byte_at: float | None
    status: int
    bytes_sent: int
    vm: str
    attempts: int
    reset_by: str
    flags: str
    upstream: Backend | None
    body_bytes: int


class AccessLog:
    """Buffers finished requests and writes them as log lines in batches."""

    def __init__(self, loop: asyncio.AbstractEventLoop, enabled: bool = True, sample: float = 1.0) -> None:
        self.loop = loop
        self.enabled = enabled
        self.sample = sample
        self.buffer: list[Record] = []
        self._timer: asyncio.TimerHandle | None = None

    def record(self, exchange: Finished, now: float) -> None:
        """Keep the request's fields for the next batch (the only access-log work on the request path)."""
        status = exchange.status
        if not self.enabled:
            return
        if self.sample < 1.0 and 0 < status < 500 and not exchange.flags and random.random() >= self.sample:
            return
        request = exchange.request
        self.buffer.append((
            exchange.started_at, exchange.request_id, exchange.client_ip, exchange.protocol, request.method,
            request.authority, request.path, status, exchange.bytes_sent, exchange.vm, exchange.attempts,
            exchange.first_byte_at, now, exchange.reset_by, exchange.flags, exchange.upstream, exchange.body_bytes,
            request.headers,
        ))
        if self._timer is None:
            # a fresh context: lines must not pick up what a NATS handler bound (merge_contextvars)
            self._timer = self.loop.call_later(FLUSH_S, self.flush, context=contextvars.Context())

    def flush(self) -> None:
        """Write every buffered record (also called on stop, so no line is lost)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self.buffer = self.buffer, []
        wall_offset = time.time() - self.loop.time()
        for record in batch:
            log.info("access", **fields(record, wall_offset))


def fields(record: Record, wall_offset: float) -> dict[str, Any]:
    """A record as the line's key-value pairs (times in seconds, rounded to microseconds)."""
    start, rid, client, protocol, method, authority, path, status, sent, vm, attempts, first, end, reset = record[:14]
    flags, upstream, received, headers = record[14:]
    out: dict[str, Any] = {
        "time": datetime.fromtimestamp(start + wall_offset, UTC).isoformat(),
        "request_id": rid.decode(errors="replace"), "client": client, "protocol": protocol,
        "method": method.decode(errors="replace"),
        "authority": authority.decode(errors="replace"), "path": path.decode(errors="replace"),
        "status": status, "bytes": sent, "bytes_in": received, "vm": vm, "attempts": attempts,
        "upstream": upstream.address if upstream is not None else None,
        "user_agent": user_agent(headers), "flags": flags or "-",
        "first_byte_s": round(first - start, 6) if first is not None else None,
        "duration_s": round(end - start, 6),
    }
    if reset:
        out["reset_by"] = reset
    return out


def user_agent(headers: Headers) -> str | None:
    """The request's `user-agent` (names are lower case by now), cut to 200 characters for the log line."""
    for name, value in headers:
        if name == b"user-agent":
            return value[:200].decode(errors="replace")
    return None
