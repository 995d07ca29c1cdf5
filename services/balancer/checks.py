"""Active health checks: a request to each backend every interval, over the upstream protocol.

A check passes on any status below 500 within the timeout. Results go to the backend's pure
`Health` state machine; this module only does the I/O.
"""

from __future__ import annotations

import asyncio

import structlog

from services.balancer.core.backends import Backend
from services.balancer.headers import Headers
from services.balancer.router import Router
from services.balancer.upstream import Call, UpstreamRequest

log = structlog.get_logger("balancer.checks")

USER_AGENT = b"quicfleet-balancer-health"


class _CheckSink:
    """Resolves a future with the response status (or 0 on failure)."""

    def __init__(self, future: asyncio.Future[int]) -> None:
        self.future = future

    def on_headers(self, status: int, headers: Headers) -> None:
        if not self.future.done():
            self.future.set_result(status)

    def on_data(self, data: bytes) -> None:
        """The body does not matter."""

    def on_end(self) -> None:
        if not self.future.done():
            self.future.set_result(0)

    def on_failed(self, reason: str) -> None:
        if not self.future.done():
            self.future.set_result(0)


async def check_once(router: Router, backend: Backend, path: bytes, timeout_s: float) -> bool:
    """One active check of one backend."""
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    request = UpstreamRequest(b"GET", path, backend.address.encode(), [(b"user-agent", USER_AGENT)], False)
    call: Call = router.upstream_for(backend).request(request, _CheckSink(future))
    try:
        async with asyncio.timeout(timeout_s):
            status = await future
    except TimeoutError:
        call.abort()
        return False
    return 0 < status < 500


async def check_all(router: Router, path: bytes, timeout_s: float) -> None:
    """Check every known backend concurrently and feed the results to their health."""
    backends = list(router.table.backends.values())
    results = await asyncio.gather(*(check_once(router, b, path, timeout_s) for b in backends))
    for backend, passed in zip(backends, results, strict=True):
        if passed and backend.health.check_passed():
            router.telemetry.health_changed(backend.vm, healthy=True)
            log.info("backend.healthy", backend=backend.vm)
        elif not passed and backend.health.check_failed():
            router.telemetry.health_changed(backend.vm, healthy=False)
            aborted = router.abort_in_flight(backend, "unhealthy")
            log.warning("backend.unhealthy", backend=backend.vm, aborted=aborted)
