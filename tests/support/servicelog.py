"""Reading a service process's JSON log lines (QUICFLEET_LOG_FORMAT=json) for the events a test waits on.

A service says what it did in its log (`http.listening` with the port, `service.stopping` at the
start of its stop): waiting for that line is waiting on the event itself, with a deadline.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any


async def next_event(stdout: asyncio.StreamReader, event: str, timeout: float = 30.0) -> dict[str, Any]:
    """The next JSON log line whose `event` is `event`; fails when the process ends or `timeout` passes first."""
    async with asyncio.timeout(timeout):
        while line := await stdout.readline():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("event") == event:
                return entry
    raise AssertionError(f"the process ended before it logged {event}")
