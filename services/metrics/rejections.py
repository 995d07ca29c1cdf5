"""Rejected input per service and subject, gathered from every service's `$SRV.STATS` reply.

The scaler and the provisioner have no HTTP server of their own; each of their micro endpoints
carries the service's per-subject counts of commands answered `invalid` and events dropped as
malformed (`shared.endpoints`). The metrics service asks `$SRV.STATS` now and then, keeps the
latest counts of each service instance, and `/metrics` exposes their sum per service and subject
as `quicfleet_rejected_inputs_total`. Its own bad events it adds directly.

An instance that stops is remembered for `forget_after_s` (the dashboard's history), so the sum
does not drop (a counter reset to Prometheus) the moment a service restarts under a new id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import nats.errors
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.endpoints import STATS_KEY

STATS_SUBJECT = "$SRV.STATS"
MAX_SUBJECTS = 1000
"""Subjects kept per instance: the services bound their own tables; this bounds a confused replier."""

Count = Annotated[int, Field(ge=0, le=2**63 - 1)]


class _Endpoint(BaseModel):
    model_config = ConfigDict(extra="ignore")
    data: dict[str, Any] | None = None


class StatsReply(BaseModel):
    """The part of a micro `$SRV.STATS` reply we read: who answered and its endpoints' data."""

    model_config = ConfigDict(extra="ignore")
    name: Annotated[str, Field(min_length=1, max_length=64)]
    id: Annotated[str, Field(min_length=1, max_length=64)]
    endpoints: Annotated[list[_Endpoint], Field(max_length=1000)] = []


class _Counts(BaseModel):
    counts: Annotated[dict[Annotated[str, Field(max_length=256)], Count], Field(max_length=MAX_SUBJECTS)]


def parse_stats(data: bytes) -> tuple[str, str, dict[str, int]] | None:
    """(service, instance id, counts per subject) from a `$SRV.STATS` reply; None when it carries none."""
    try:
        reply = StatsReply.model_validate_json(data)
        for endpoint in reply.endpoints:
            if endpoint.data and STATS_KEY in endpoint.data:
                counts = _Counts.model_validate({"counts": endpoint.data[STATS_KEY]}).counts
                return reply.name, reply.id, counts
    except ValidationError:
        return None
    return None


@dataclass
class _Seen:
    counts: dict[str, int]
    at: float


@dataclass
class Rejections:
    """The latest counts of each (service, instance); pure: callers pass `now`."""

    forget_after_s: float = 900.0
    max_instances: int = 1000
    instances: dict[tuple[str, str], _Seen] = field(default_factory=dict)

    def observe(self, service: str, instance: str, counts: Mapping[str, int], now: float) -> None:
        key = (service, instance)
        if key not in self.instances and len(self.instances) >= self.max_instances:
            return
        self.instances[key] = _Seen(dict(counts), now)

    def expire(self, now: float) -> list[tuple[str, str]]:
        """Forget instances not heard from for `forget_after_s`; returns them."""
        gone = [key for key, seen in self.instances.items() if now - seen.at > self.forget_after_s]
        for key in gone:
            del self.instances[key]
        return gone

    def totals(self) -> dict[tuple[str, str], int]:
        """Rejected inputs per (service, subject), summed over the service's instances."""
        summed: dict[tuple[str, str], int] = {}
        for (service, _instance), seen in sorted(self.instances.items()):
            for subject, count in seen.counts.items():
                summed[(service, subject)] = summed.get((service, subject), 0) + count
        return summed


async def gather(nc: Any, window_s: float) -> list[tuple[str, str, dict[str, int]]]:
    """Ask `$SRV.STATS` once and parse every reply that arrives within `window_s` (raw nats-py client)."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    found: list[tuple[str, str, dict[str, int]]] = []
    try:
        await nc.publish(STATS_SUBJECT, b"", reply=inbox)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + window_s
        while (remaining := deadline - loop.time()) > 0:
            try:
                msg = await sub.next_msg(timeout=remaining)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            if (parsed := parse_stats(msg.data)) is not None:
                found.append(parsed)
    finally:
        await sub.unsubscribe()
    return found
