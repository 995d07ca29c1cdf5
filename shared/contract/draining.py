"""What a balancer says when a drain it was told of (`fleet.vm.draining`) is over for it."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from shared.contract.base import Event, Name, RequestId, utcnow


class BackendDrained(Event):
    """`fleet.balancer.drained`: a balancer has no request in flight to `vm` (or gave up waiting)."""

    vm: Name
    balancer: Name
    at: datetime = Field(default_factory=utcnow)
    timed_out: bool = False
    request_id: RequestId | None = None
