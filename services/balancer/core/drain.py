"""Drain bookkeeping: which VMs are draining, until when, and who asked.

The glue calls `finished(now, outstanding)` after a request to a draining VM completes and on a
timer tick; it returns the drains that are over, so the glue publishes one `BackendDrained` each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class DrainOver:
    """A drain that ended: the VM has nothing in flight, or its deadline passed first."""

    vm: str
    timed_out: bool
    request_ids: tuple[str | None, ...]


@dataclass
class _Drain:
    deadline: float
    request_ids: list[str | None] = field(default_factory=list)


class DrainBook:
    """The VMs currently draining on this balancer."""

    def __init__(self) -> None:
        self._drains: dict[str, _Drain] = {}

    def __contains__(self, vm: str) -> bool:
        return vm in self._drains

    def __len__(self) -> int:
        return len(self._drains)

    def start(self, vm: str, now: float, deadline_s: float, request_id: str | None = None) -> None:
        """Begin (or join) a drain; a second request keeps the earlier deadline and is answered too."""
        drain = self._drains.get(vm)
        if drain is None:
            drain = self._drains[vm] = _Drain(deadline=now + deadline_s)
        else:
            drain.deadline = min(drain.deadline, now + deadline_s)
        drain.request_ids.append(request_id)

    def finished(self, now: float, outstanding: Callable[[str], int]) -> list[DrainOver]:
        """Drains that are over now; they are forgotten once returned."""
        over = []
        for vm, drain in list(self._drains.items()):
            idle = outstanding(vm) == 0
            if idle or now >= drain.deadline:
                over.append(DrainOver(vm, timed_out=not idle, request_ids=tuple(drain.request_ids)))
                del self._drains[vm]
        return over

    def cancel(self, vm: str) -> None:
        """Forget a drain (the VM is gone)."""
        self._drains.pop(vm, None)
