"""Glue between exchanges and the pure core: choose a backend, keep the books, finish drains.

The router owns the backend table, the picker, the retry budget, the drain book and one
upstream per backend; finished exchanges go to the metrics counters and the access log. The
walk is one way, as in Envoy's router filter: an exchange keeps its own retry state and asks
the router (choose, may I retry, track, account), and the router only answers with values. It
never calls an exchange: when a backend is gone it hands the requests in flight there back to
whoever learnt it (membership, checks, an exchange that saw an impostor), who fails them. It runs
on the event loop thread only; nothing here blocks or awaits.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Protocol

import structlog

from services.balancer.core.backends import Backend, BackendTable
from services.balancer.core.drain import DrainBook, DrainOver
from services.balancer.core.options import ProxyOptions
from services.balancer.core.policy import Picker
from services.balancer.core.retry import RetryBudget
from services.balancer.core.upstream import Upstream, UpstreamRequest
from services.balancer.process.telemetry import Telemetry
from services.balancer.proxy.accesslog import AccessLog, Finished
from shared.throttle import LineThrottle

log = structlog.get_logger("balancer.router")

UpstreamFactory = Callable[[Backend], Upstream]


class InFlight(Protocol):
    """A request in flight as the router books it (an exchange). The router only holds it: `lost`,
    `remove` and `identity_failed` return them to their caller, who calls `backend_lost`."""

    backend: Backend | None

    def backend_lost(self, reason: str) -> None: ...


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
        busy: Callable[[str], int] | None = None,
    ) -> None:
        """`busy` says per VM what keeps its drain open: requests in flight (default), or the l4 mode's flows."""
        self.loop = asyncio.get_running_loop()
        self.busy = busy or self._outstanding
        self.telemetry = telemetry or Telemetry()
        self.access_log = access_log or AccessLog(self.loop, enabled=False)
        self._panicking = False
        self.table = table
        self.picker = picker
        self.budget = budget
        self.make_upstream = upstreams
        self.options = options
        self.on_drained = on_drained
        self.drains = DrainBook()
        self.upstreams: dict[str, tuple[Backend, Upstream]] = {}
        self.in_flight_by: dict[Backend, set[InFlight]] = {}
        self.peak_body_buffered = 0
        """Most request-body bytes one exchange held at once (a gauge for tests and reports)."""
        self.invalid_responses: Counter[str] = Counter()
        """Responses from VMs refused as invalid (502 from the balancer), by VM."""
        self._invalid_lines = LineThrottle()
        self._quiet: asyncio.Event | None = None
        self._deadlines: dict[str, asyncio.TimerHandle] = {}
        """Per draining VM, the timer of its earliest deadline (a drain must end then even if nothing finishes)."""

    @property
    def panicking(self) -> bool:
        """Whether the last choice found the table in panic (logged on each change); telemetry reads it."""
        return self._panicking

    def key_of(self, request: UpstreamRequest, client_ip: str) -> bytes:
        """The consistent-hash key: a request header when configured, else the client address."""
        if self.options.hash_header is not None:
            for name, value in request.headers:
                if name == self.options.hash_header:
                    return value
        return client_ip.encode()

    def choose(self, request: UpstreamRequest, client_ip: str, exclude: Backend | None = None) -> Backend | None:
        """A backend for a request, or None when none may take it.

        `exclude` is the backend a retry leaves (kept when it is the only candidate). A first
        attempt that found a backend counts towards the retry budget.
        """
        now = self.loop.time()
        candidates = self.table.candidates(now)
        if self.table.panic is not self._panicking:
            self._panic_changed(len(candidates))
        if exclude is not None and len(candidates) > 1:
            candidates = [b for b in candidates if b is not exclude]
        key = self.key_of(request, client_ip) if self.picker.policy == "hash" else b""
        backend = self.picker.pick(candidates, now, key)
        if backend is not None and exclude is None:
            self.budget.request(now)
        return backend

    def may_retry(self) -> bool:
        """Whether the retry budget allows one more retry now (a yes spends it)."""
        return self.budget.try_retry(self.loop.time())

    def retried(self, backend: Backend, reason: str) -> None:
        """Count and log a retry that leaves `backend`."""
        self.telemetry.retried()
        log.info("request.retried", backend=backend.vm, reason=reason)

    def track(self, backend: Backend, attempt: InFlight) -> None:
        """Book an attempt on `backend` until `untrack`, so a backend that goes can hand it back."""
        self.in_flight_by.setdefault(backend, set()).add(attempt)

    def _panic_changed(self, known: int) -> None:
        """Log entering and leaving panic once each (not per request), and count the entries."""
        self._panicking = self.table.panic
        if self._panicking:
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

    def untrack(self, backend: Backend, attempt: InFlight) -> None:
        attempts = self.in_flight_by.get(backend)
        if attempts is not None:
            attempts.discard(attempt)
            if not attempts:
                del self.in_flight_by[backend]

    def lost(self, backend: Backend, why: str) -> list[InFlight]:
        """Unbook every attempt in flight to `backend` (it is gone) and return them for the caller to fail.

        Each one then retries or answers 502 on its own; retries cannot land on `backend`
        because callers took it out of the candidates first.
        """
        attempts = self.in_flight_by.pop(backend, set())
        if attempts:
            log.warning("backend.in_flight_aborted", backend=backend.vm, why=why, count=len(attempts))
        return [a for a in attempts if a.backend is backend]

    def identity_failed(self, backend: Backend, seen: bytes | None) -> list[InFlight]:
        """Another machine answered at `backend`'s address: out at once and counted; returns its in-flight
        attempts, which the caller fails with `IDENTITY`.

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
        return self.lost(backend, "identity")

    def invalid_response(self, backend: Backend, why: str) -> None:
        """A VM sent a response head the balancer refuses: count it; log a few lines per VM and 10 s."""
        self.invalid_responses[backend.vm] += 1
        left_out = self._invalid_lines.admit(backend.vm, self.loop.time())
        if left_out is not None:
            log.warning("backend.invalid_response", backend=backend.vm, why=why, left_out=left_out)

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

    def finished(self, done: Finished) -> None:
        """A request is over (answered, failed or reset): count it and log it."""
        now = self.loop.time()
        self.telemetry.request_done(done.vm, done.status, done.protocol, done.bytes_sent, now - done.started_at)
        self.access_log.record(done, now)

    def drain(self, vm: str, deadline_s: float, request_id: str | None) -> None:
        """Stop new requests to `vm` now and remember who waits for the end of its drain."""
        self.table.drain(vm)
        self.drains.start(vm, self.loop.time(), deadline_s, request_id)
        timer = self._deadlines.get(vm)
        if timer is None or timer.when() > self.loop.time() + deadline_s:
            if timer is not None:
                timer.cancel()
            self._deadlines[vm] = self.loop.call_later(deadline_s, self._deadline_passed, vm)
        self.check_drains()

    def _deadline_passed(self, vm: str) -> None:
        self._deadlines.pop(vm, None)
        self.check_drains()

    def check_drains(self) -> None:
        for over in self.drains.finished(self.loop.time(), self.busy):
            self.on_drained(over)

    def _outstanding(self, vm: str) -> int:
        backend = self.table.get(vm)
        return backend.outstanding if backend is not None else 0

    def remove(self, vm: str) -> list[InFlight]:
        """A VM is gone: forget it and close its upstream; returns what was in flight to it, for the caller
        to fail now (with `RESET`)."""
        backend = self.table.remove(vm)
        lost = self.lost(backend, "removed") if backend is not None else []
        entry = self.upstreams.pop(vm, None)
        if entry is not None:
            entry[1].close()
        self.telemetry.forget(vm)
        self.invalid_responses.pop(vm, None)
        self.check_drains()
        return lost

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
        for timer in self._deadlines.values():
            timer.cancel()
        self._deadlines.clear()
        for _, upstream in self.upstreams.values():
            upstream.close()
        self.upstreams.clear()
