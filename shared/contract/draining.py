"""Drain coordination between the scaler and every balancer."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from shared.contract.base import Message, Name, RequestId, utcnow


class DrainBackend(Message):
    """`fleet.balancer.drain`: stop new requests to `vm` now; report once it has none in flight."""

    vm: Name
    deadline_s: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 30.0
    request_id: RequestId | None = None


class BackendDrained(Message):
    """`fleet.balancer.drained`: a balancer has no request in flight to `vm` (or gave up waiting)."""

    vm: Name
    balancer: Name
    at: datetime = Field(default_factory=utcnow)
    timed_out: bool = False
    request_id: RequestId | None = None
