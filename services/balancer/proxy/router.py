"""Glue between exchanges and the pure core: pick a backend, retry, account, finish drains.

The router owns the backend table, the picker, the retry budget, the drain book and one
upstream per backend; finished exchanges go to the metrics counters and the access log. It runs
on the event loop thread only; nothing here blocks or awaits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from services.balancer.core.backends import Backend, BackendTable
from services.balancer.core.drain import DrainBook, DrainOver
from services.balancer.core.options import ProxyOptions
from services.balancer.core.policy import Picker
from services.balancer.core.retry import RetryBudget
from services.balancer.core.upstream import IDENTITY, RESET, Upstream
from services.balancer.process.telemetry import Telemetry
from services.balancer.proxy.accesslog import AccessLog
from services.balancer.proxy.exchange import Exchange

log = structlog.get_logger("balancer.router")

UpstreamFactory = Callable[[Backend], Upstream]


class Router:
    """Routes exchanges to backends and keeps the books."""

    def __init__(
        self,
        table: BackendTable,
        picker: Picker,
        budget: RetryBudget,
        upstreams: UpstreamFactory,
        options: ProxyOptions,
        on_drained: Callable[[DrainOver], None],
        telemetry: Telemetry | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.telemetry = telemetry or Telemetry()
        self.telemetry.panic = lambda: self.panicking
        self.access_log = access_log or AccessLog(self.loop, enabled=False)
        self.panicking = False
        """Whether the last dispatch found the table in panic (logged on each change)."""
        self.table = table
        self.picker = picker
        self.budget = budget
        self.make_upstream = upstreams
        self.options = options
        self.on_drained = on_drained
        self.drains = DrainBook()
        self.upstreams: dict[str, tuple[Backend, Upstream]] = {}
        self.in_flight_by: dict[Backend, set[Exchange]] = {}
        self.peak_body_buffered = 0
        """Most request-body bytes one exchange held at once (a gauge for tests and reports)."""
        self._quiet: asyncio.Event | None = None

    def key_of(self, exchange: Exchange) -> bytes:
        """The consistent-hash key: a request header when configured, else the client address."""
        if self.options.hash_header is not None:
            for name, value in exchange.request.headers:
                if name == self.options.hash_header:
                    return value
        return exchange.client_ip.encode()

    def dispatch(self, exchange: Exchange, exclude: Backend | None = None) -> None:
        """Send an exchange to a backend, or answer 503 when none may take it."""
        now = self.loop.time()
        candidates = self.table.candidates(now)
        if self.table.panic is not self.panicking:
            self._panic_changed(len(candidates))
        if exclude is not None and len(candidates) > 1:
            candidates = [b for b in candidates if b is not exclude]
        key = self.key_of(exchange) if self.picker.policy == "hash" else b""
        backend = self.picker.pick(candidates, now, key)
        if backend is None:
            exchange.respond(503, b"no backend available\n", failed=False)
            return
        if exclude is None:
            self.budget.request(now)
        self.in_flight_by.setdefault(backend, set()).add(exchange)
        exchange.attach(backend, self.upstream_for(backend))

    def _panic_changed(self, known: int) -> None:
        """Log entering and leaving panic once each (not per request), and count the entries."""
        self.panicking = self.table.panic
        if self.panicking:
            self.telemetry.panic_entered()
            log.warning("balancer.panic_entered", known=known, threshold=self.table.panic_threshold)
        else:
            log.info("balancer.panic_left", usable=known)

    def upstream_for(self, backend: Backend) -> Upstream:
        """The backend's upstream, re-made when the VM's address changed."""
        entry = self.upstreams.get(backend.vm)
        if entry is not None and entry[0] is backend:
            return entry[1]
        if entry is not None:
            entry[1].close()
        upstream = self.make_upstream(backend)
        self.upstreams[backend.vm] = (backend, upstream)
        return upstream

    def retry(self, exchange: Exchange, backend: Backend, reason: str) -> bool:
        """Retry an idempotent request that failed before any response byte, within the budget."""
        if not exchange.retryable or not self.budget.try_retry(self.loop.time()):
            return False
        exchange.end_attempt(failed=True, upstream_failed=True)
        self.telemetry.retried()
        log.info("request.retried", backend=backend.vm, reason=reason)
        self.dispatch(exchange, exclude=backend)
        return True

    def untrack(self, backend: Backend, exchange: Exchange) -> None:
        exchanges = self.in_flight_by.get(backend)
        if exchanges is not None:
            exchanges.discard(exchange)
            if not exchanges:
                del self.in_flight_by[backend]

    def abort_in_flight(self, backend: Backend, why: str, reason: str = RESET) -> int:
        """Fail every attempt in flight to `backend` at once (it is gone); returns how many.

        Each exchange retries or answers 502 on its own; retries cannot land on `backend`
        because callers took it out of the candidates first.
        """
        exchanges = self.in_flight_by.pop(backend, set())
        for exchange in list(exchanges):
            if exchange.backend is backend:
                exchange.backend_lost(reason)
        if exchanges:
            log.warning("backend.in_flight_aborted", backend=backend.vm, why=why, count=len(exchanges))
        return len(exchanges)

    def identity_failed(self, backend: Backend, seen: bytes | None) -> None:
        """Another machine answered at `backend`'s address: out at once, counted, and its in-flight aborted.

        No fall streak: one answer from the wrong machine says the address is no longer the
        VM's, and every request sent there meanwhile is going to that machine too.
        """
        news = backend.verification.mismatched(seen)
        self.telemetry.identity_mismatched(backend.vm)
        if news:
            log.warning(
                "backend.identity_mismatch",
                vm=backend.vm,
                address=backend.address,
                expected=backend.identity,
                seen=backend.verification.seen,
            )
        self.abort_in_flight(backend, "identity", IDENTITY)

    def attempt_over(
        self, backend: Backend, seconds: float, failed: bool, upstream_failed: bool, status: int = 0
    ) -> None:
        """Count an attempt; feed passive health (`status`: the VM's response status, 0 for none);
        finish a drain that waited for it."""
        backend.ended(seconds, failed)
        now = self.loop.time()
        if upstream_failed:
            self._ejected_if(backend.health.request_failed(now), backend, "failures")
        elif status >= 500:
            self._ejected_if(backend.health.server_error(now), backend, "5xx")
        else:
            backend.health.request_succeeded(now)
        if backend.draining and backend.outstanding == 0:
            self.check_drains()
        if self._quiet is not None and self.in_flight() == 0:
            self._quiet.set()

    def _ejected_if(self, ejected: bool, backend: Backend, why: str) -> None:
        if ejected:
            self.telemetry.ejected(backend.vm)
            log.warning("backend.ejected", backend=backend.vm, why=why, ejections=backend.health.ejections)

    def finished(self, exchange: Exchange) -> None:
        """A request is over (answered, failed or reset): count it and log it."""
        now = self.loop.time()
        self.telemetry.request_done(
            exchange.vm, exchange.status, exchange.protocol, exchange.bytes_sent, now - exchange.started_at
        )
        self.access_log.record(exchange, now)

    def drain(self, vm: str, deadline_s: float, request_id: str | None) -> None:
        """Stop new requests to `vm` now and remember who waits for the end of its drain."""
        self.table.drain(vm)
        self.drains.start(vm, self.loop.time(), deadline_s, request_id)
        self.check_drains()

    def check_drains(self) -> None:
        for over in self.drains.finished(self.loop.time(), self._outstanding):
            self.on_drained(over)

    def _outstanding(self, vm: str) -> int:
        backend = self.table.get(vm)
        return backend.outstanding if backend is not None else 0

    def remove(self, vm: str) -> None:
        """A VM is gone: forget it, fail what is in flight to it now, and close its upstream."""
        backend = self.table.remove(vm)
        if backend is not None:
            self.abort_in_flight(backend, "removed")
        entry = self.upstreams.pop(vm, None)
        if entry is not None:
            entry[1].close()
        self.telemetry.forget(vm)
        self.check_drains()

    def in_flight(self) -> int:
        """Requests this balancer is waiting on, over every backend it still routes to."""
        return sum(max(0, b.outstanding) for b in self.table.backends.values())

    async def quiet(self) -> None:
        """Return once no request is in flight (used when stopping)."""
        self._quiet = asyncio.Event()
        if self.in_flight():
            await self._quiet.wait()

    def close(self) -> None:
        self.access_log.flush()
        for _, upstream in self.upstreams.values():
            upstream.close()
        self.upstreams.clear()
