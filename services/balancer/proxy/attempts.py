"""What an exchange does per attempt on a backend once it is sent: retry it, give it up, time it, account it.

Split from `exchange` so that module keeps sending the request and the two sides' callbacks (the client's
body and resets, the upstream's head, data, end and failure) with the balancer's own answers, and this
one each attempt's course: an idempotent request that failed before any response byte is retried once on
another backend, a VM that is gone fails its attempt at once, one timer cuts a first byte (per try while a
retry is possible) or a response gone idle, and each attempt's end is accounted on its backend. A base
class: `Exchange.__init__` sets the attributes it reads, and `Exchange` sends (`_try`) and fails
(`on_failed`), declared here only so the two halves type-check apart.
"""

from __future__ import annotations

import asyncio

from services.balancer.core import flags as F
from services.balancer.core.backends import Backend
from services.balancer.core.upstream import RESET, TIMEOUT, Call, UpstreamRequest
from services.balancer.proxy.router import Router

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS"})


class Attempts:
    """The attempts of one exchange: at most two, one at a time (the base of `Exchange`)."""

    request: UpstreamRequest
    router: Router
    loop: asyncio.AbstractEventLoop
    backend: Backend | None
    call: Call | None
    attempts: int
    flags: str
    status: int
    response_started: bool
    finished: bool
    last_activity: float
    attempt_started: float
    _timer: asyncio.TimerHandle | None

    @property
    def retryable(self) -> bool:
        return self.request.method in IDEMPOTENT and not self.request.has_body and self.attempts < 2

    def _retry(self, backend: Backend, reason: str) -> bool:
        """Retry an idempotent request that failed before any response byte, if the router's budget allows."""
        if not self.retryable or not self.router.may_retry():
            return False
        self._end_attempt(failed=True, upstream_failed=True)
        self.flags = F.with_flag(F.with_flag(self.flags, F.for_reason(reason)), F.RETRIED)
        self.router.retried(backend, reason)
        self._try(exclude=backend)
        return True

    def backend_lost(self, reason: str = RESET) -> None:
        """The VM is gone (destroyed, failed, unhealthy, another machine at its address): give up on it now.

        A VM killed behind our back sends no RST, so without this its requests would wait for
        the first-byte or idle timeout. Failing the attempt retries an idempotent request that
        has no response byte yet; anything else gets 502 (or a reset once the response began).
        """
        if self.finished:
            return
        call, self.call = self.call, None
        if call is not None:
            call.abort()
        self.on_failed(reason)

    def _end_attempt(self, failed: bool, upstream_failed: bool) -> None:
        """Account the current attempt on its backend (latency, counters, health: a 5xx counts there)."""
        backend, self.backend, self.call = self.backend, None, None
        if backend is not None:
            self.router.untrack(backend, self)
            status = self.status if self.response_started else 0
            self.router.attempt_over(backend, self.loop.time() - self.attempt_started, failed, upstream_failed, status)

    def _abort_call(self) -> None:
        if self.call is not None:
            self.call.abort()

    def _first_byte_limit(self) -> float:
        """The per-try timeout while a retry is still possible, else the full first-byte timeout.

        A first attempt that can still be retried is cut sooner (HAProxy/Envoy's per-try
        timeout), so a VM that hangs costs an idempotent request `try_timeout_s`, not 30 s; the
        retry then gets the full first-byte timeout measured from its own start.
        """
        options = self.router.options
        if self.retryable and 0 < options.try_timeout_s < options.first_byte_timeout_s:
            return options.try_timeout_s
        return options.first_byte_timeout_s

    def _tick(self) -> None:
        """Timer: first-byte timeout before the response, idle timeout during it."""
        self._timer = None
        if self.finished:
            return
        limit = self.router.options.idle_timeout_s if self.response_started else self._first_byte_limit()
        due = self.last_activity + limit
        if self.loop.time() >= due:
            self.on_failed(TIMEOUT)
        else:
            self._timer = self.loop.call_at(due, self._tick)

    # defined by `Exchange`
    def _try(self, exclude: Backend | None = None) -> None:
        """One attempt on the backend the router chooses (`Exchange._try`)."""
        raise NotImplementedError

    def on_failed(self, reason: str) -> None:
        """The attempt failed for `reason` (`Exchange.on_failed`)."""
        raise NotImplementedError
