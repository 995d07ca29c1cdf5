"""Helpers shared by the test tiers: waiting on events with deadlines, collecting messages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def wait_until(
    condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> Any:
    """Poll `condition` (sync or async) until truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


class Collector:
    """Messages received on a subject, with a way to wait for one that matches."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self._changed = asyncio.Event()

    async def __call__(self, msg: Any) -> None:
        self.messages.append(msg)
        self._changed.set()

    async def wait_for(self, match: Callable[[Any], bool], timeout: float = 10.0) -> Any:
        """Return the first message (already received or to come) for which `match` is true."""
        deadline = time.monotonic() + timeout
        while True:
            for msg in self.messages:
                if match(msg):
                    return msg
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching message within {timeout} s; got {len(self.messages)}")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                continue
