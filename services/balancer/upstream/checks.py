"""Active health checks: a request to each backend every interval, over the upstream protocol.

A check passes on any status below 500 within the timeout. For a VM that must prove its identity
the response's `x-quicfleet-vm` header is read too: the right UUID verifies it, anything else
(or nothing) fails the check on the spot as "address answered as another VM", whatever the
status, which then says nothing about the VM's own health. Results go to the backend's pure
`Health` and `Verification`; this module only does the I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import structlog

from services.balancer.core.backends import Backend
from services.balancer.core.headers import Headers
from services.balancer.core.identity import identity_of
from services.balancer.core.upstream import IDENTITY, RESET, Call, UpstreamRequest
from services.balancer.proxy.router import Router

log = structlog.get_logger("balancer.checks")

USER_AGENT = b"quicfleet-balancer-health"

Answer = tuple[int, bytes | None]
"""A check's response status (0: none came) and the `x-quicfleet-vm` value it carried."""


class _CheckSink:
    """Resolves a future with the response status and identity (status 0 on failure)."""

    def __init__(self, future: asyncio.Future[Answer]) -> None:
        self.future = future

    def on_headers(self, status: int, headers: Headers) -> None:
        if not self.future.done():
            self.future.set_result((status, identity_of(headers)))

    def on_data(self, data: bytes) -> None:
        """The body does not matter."""

    def on_end(self) -> None:
        if not self.future.done():
            self.future.set_result((0, None))

    def on_failed(self, reason: str) -> None:
        if not self.future.done():
            self.future.set_result((0, None))


async def check_once(router: Router, backend: Backend, path: bytes, timeout_s: float) -> Answer:
    """One active check of one backend."""
    future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
    request = UpstreamRequest(b"GET", path, backend.address.encode(), [(b"user-agent", USER_AGENT)], False)
    call: Call = router.upstream_for(backend).request(request, _CheckSink(future))
    try:
        async with asyncio.timeout(timeout_s):
            return await future
    except TimeoutError:
        call.abort()
        return 0, None


async def check_all(router: Router, path: bytes, timeout_s: float) -> None:
    """Check every known backend concurrently and feed the results to their health."""
    await check_backends(router, list(router.table.backends.values()), path, timeout_s)


async def check_backends(router: Router, backends: Iterable[Backend], path: bytes, timeout_s: float) -> None:
    """Check these backends concurrently; a result for one replaced or removed meanwhile is dropped."""
    backends = list(backends)
    answers = await asyncio.gather(*(check_once(router, b, path, timeout_s) for b in backends))
    for backend, (status, seen) in zip(backends, answers, strict=True):
        if router.table.get(backend.vm) is backend:
            record(router, backend, status, seen)


def record(router: Router, backend: Backend, status: int, seen: bytes | None) -> None:
    """Feed one check's answer to the backend's identity and health, logging what changed."""
    verification = backend.verification
    if status and not verification.matches(seen):
        for attempt in router.identity_failed(backend, seen):
            attempt.backend_lost(IDENTITY)
        return
    if status and verification.expected is not None and verification.confirmed():
        log.info("backend.identity_verified", vm=backend.vm, address=backend.address)
    passed = 0 < status < 500
    if passed and backend.health.check_passed():
        router.telemetry.health_changed(backend.vm, healthy=True)
        log.info("backend.healthy", backend=backend.vm)
    elif not passed and backend.health.check_failed():
        router.telemetry.health_changed(backend.vm, healthy=False)
        lost = router.lost(backend, "unhealthy")
        for attempt in lost:
            attempt.backend_lost(RESET)
        log.warning("backend.unhealthy", backend=backend.vm, aborted=len(lost))


class Verifier:
    """Checks a backend that must prove its identity as soon as it is added or changed.

    Waiting for the next interval would keep a new VM out of rotation for up to
    `health_interval_s`. One check at a time per backend: a burst of events spawns no pile.
    """

    def __init__(self, router: Router, path: bytes, timeout_s: float) -> None:
        self.router = router
        self.path = path
        self.timeout_s = timeout_s
        self.checking: set[Backend] = set()

    def due(self) -> list[Backend]:
        """The unverified backends no check is running for; they count as checking from now on."""
        due = [b for b in self.router.table.backends.values() if b.verification.pending and b not in self.checking]
        self.checking.update(due)
        return due

    async def check(self, backends: list[Backend]) -> None:
        try:
            await check_backends(self.router, backends, self.path, self.timeout_s)
        finally:
            self.checking.difference_update(backends)
