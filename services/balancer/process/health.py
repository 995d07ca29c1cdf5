"""`/healthz` and `/readyz` on the admin port, for an outside L4 balancer, keepalived or systemd.

Two questions with different answers. *Alive* (`/healthz`): the process runs and its event loop
is not stalled; a probe task asks for a wake-up every `every_s` and measures how late it came, so
a loop busy for seconds (a blocking call, a runaway batch) reads 503 while it still answers. A
loop stalled outright answers nothing, which an outside checker reads as a failure too.
*Ready* (`/readyz`): this balancer would route a request now: its ports are bound, it is not
draining, and at least one VM may take a request. It turns 503 the moment a drain starts (SIGTERM,
before the process leaves), so an outside balancer stops sending while open requests finish.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

EVERY_S = 0.5
"""How often the loop-lag probe wakes up."""
STALLED_S = 5.0
"""A wake-up this late (or none for this long) reads as a stalled loop."""
WINDOW_S = 10.0
"""How long a late wake-up is remembered: a checker polling every few seconds sees the stall that happened
between its checks, not only the loop's state at the instant it asked."""


class LoopLag:
    """How late the event loop ran a timer it was asked for, measured by a task of its own."""

    def __init__(self, every_s: float = EVERY_S, stalled_s: float = STALLED_S, window_s: float = WINDOW_S) -> None:
        self.every_s, self.stalled_s, self.window_s = every_s, stalled_s, window_s
        self.lag_s = 0.0
        """The worst lateness of a wake-up in the last `window_s`."""
        self._worst_at = 0.0
        self.last: float | None = None
        """Loop time of the last wake-up (None before the first)."""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.every_s
            await asyncio.sleep(self.every_s)
            self.last = loop.time()
            lag = max(0.0, self.last - due)
            if lag >= self.lag_s or self.last - self._worst_at > self.window_s:
                self.lag_s, self._worst_at = lag, self.last

    def alive(self, now: float) -> tuple[bool, dict[str, Any]]:
        """Whether the loop runs on time; the body says by how much it is late."""
        silent_s = now - self.last if self.last is not None else 0.0
        ok = self.lag_s < self.stalled_s and silent_s < self.stalled_s + self.every_s
        return ok, {"alive": ok, "loop_lag_s": round(max(self.lag_s, silent_s - self.every_s, 0.0), 6)}


@dataclass(frozen=True)
class Probes:
    """What the admin port answers on `/healthz` and `/readyz`.

    `not_ready` names why this process should get no traffic now (`starting`, `draining`,
    `no_vm`), or None when it should.
    """

    lag: LoopLag
    not_ready: Callable[[], str | None]

    def live(self, now: float) -> tuple[int, dict[str, Any]]:
        ok, body = self.lag.alive(now)
        return (200 if ok else 503), body

    def ready(self) -> tuple[int, dict[str, Any]]:
        reason = self.not_ready()
        body: dict[str, Any] = {"ready": reason is None}
        if reason is not None:
            body["reason"] = reason
        return (200 if reason is None else 503), body
