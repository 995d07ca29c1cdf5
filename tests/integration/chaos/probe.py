"""What the bad-input rows measure: process RSS, libvirt calls through our port, and micro replies."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from nats.aio.msg import Msg

from shared.contract.base import ErrorCode, ErrorReply

T = TypeVar("T")
MUTATING = frozenset({
    "define", "create_volume", "start", "suspend", "resume", "set_tag", "set_clock", "stop", "undefine",
    "delete_volume",
})
"""`Hypervisor` calls that change libvirt's state."""


def rss_mib(pid: int | str = "self") -> float:
    """Resident set size of a process, in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


class CountingHypervisor:
    """The real libvirt adapter, with every call through the provisioner's `Hypervisor` port counted."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted

    def total(self) -> int:
        return sum(self.calls.values())

    def mutations(self) -> int:
        return sum(count for name, count in self.calls.items() if name in MUTATING)


def invalid_reply_problem(msg: Msg) -> str | None:
    """Why a reply is not a clear `invalid` answer with the micro error headers (None: it is)."""
    headers = msg.headers or {}
    if headers.get("Nats-Service-Error-Code") != "400" or not headers.get("Nats-Service-Error"):
        return f"headers {headers!r}"
    try:
        reply = ErrorReply.model_validate_json(msg.data)
    except ValueError:
        return f"not an error envelope: {msg.data[:200]!r}"
    message = reply.error.message
    if reply.error.code is not ErrorCode.INVALID or not message or "Traceback" in message or 'File "' in message:
        return f"error {reply.error.code.value}: {message[:200]!r}"
    return None


async def bounded(items: Iterable[T], work: Callable[[T], Awaitable[Any]], concurrency: int = 32) -> list[Any]:
    """Run `work` on every item with at most `concurrency` at once; results in order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(item: T) -> Any:
        async with gate:
            return await work(item)

    return await asyncio.gather(*(one(item) for item in items))
