"""Leadership: one scaler replica acts, by holding a lease key in the JetStream KV bucket.

The lease is created (fails if it exists), then renewed with updates that must name the
revision they replace, so two replicas can never both write it. Expiry uses only each
replica's own monotonic clock: a follower takes over once the key's revision has not moved
for `ttl` seconds of *its* time, while the leader stops acting `ttl / 4` earlier than that on
*its* time after its last successful renewal, so clock skew between hosts cannot create two
leaders. Each new holder bumps the epoch, which fences commands from a deposed leader.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import structlog
from nats.errors import Error as NatsError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import Field, ValidationError

from shared.contract.base import Model, Name, utcnow
from shared.contract.provisioning import Epoch

log = structlog.get_logger("services.scaler.lease")

LEASE_KEY = "leader"


class LeaseRecord(Model):
    """The lease value: who holds it, in which epoch (None holder: released, free to take).

    `reason` is the holder's latest evaluation in words, carried by each renewal so that a
    follower asked for status can say why the fleet holds or moves without a write of its own.
    """

    holder: Name | None
    epoch: Epoch
    renewed_at: datetime
    reason: Annotated[str, Field(max_length=1000)] | None = None


@dataclass(frozen=True)
class Seen:
    """The lease as a follower last saw it, and when (its own monotonic clock)."""

    revision: int
    record: LeaseRecord | None
    at: float


def expired(seen: Seen | None, revision: int, ttl_s: float, now: float) -> bool:
    """The same revision has been there for `ttl_s` seconds of our own clock."""
    if seen is None or seen.revision != revision:
        return False
    return now - seen.at >= ttl_s


class Lease:
    """This replica's side of the lease. Call `tick()` every `ttl / 8`; read `leading`."""

    def __init__(self, kv: KeyValue, me: str, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.kv, self.me, self.ttl_s, self.clock = kv, me, ttl_s, clock
        self.epoch = 0
        self.holder: str | None = None
        self.reason: str | None = None
        """Leading: this replica's latest reason, written with each renewal. Following: the holder's, as last read."""
        self._revision = 0
        self._renewed_at: float | None = None
        self._seen: Seen | None = None

    @property
    def leading(self) -> bool:
        """Holder, and the last renewal is recent enough that no follower can have taken over."""
        return self._renewed_at is not None and self.clock() - self._renewed_at < self.ttl_s * 0.75

    @property
    def renew_every_s(self) -> float:
        return self.ttl_s / 4

    async def tick(self) -> bool:
        """Renew when leading, else look at the lease and take it if free; True when newly elected."""
        try:
            if self._renewed_at is not None:
                await self._renew()
                return False
            return await self._try_take()
        except (NatsError, TimeoutError) as error:
            log.warning("lease.unreachable", error=str(error) or type(error).__name__, leading=self.leading)
            if self._renewed_at is not None and not self.leading:
                self._lose("could not renew in time")
            return False

    async def _renew(self, epoch: int | None = None) -> bool:
        """Renew in `epoch` (default: ours) with a compare-and-set; False when another replica wrote it."""
        started, epoch = self.clock(), self.epoch if epoch is None else epoch
        try:
            self._revision = await self.kv.update(LEASE_KEY, self._encode(epoch), last=self._revision)
        except KeyWrongLastSequenceError:
            self._lose("another replica wrote the lease")
            return False
        self.epoch, self._renewed_at = epoch, started
        return True

    async def _try_take(self) -> bool:
        try:
            entry = await self.kv.get(LEASE_KEY)
        except KeyNotFoundError:
            return await self._write(1, create=True)
        record = _decode(entry.value)
        self.holder = record.holder if record else None
        self.reason = record.reason if record else None
        self.epoch = record.epoch if record else self.epoch
        now = self.clock()
        free = record is not None and record.holder in (None, self.me)
        if not free and not expired(self._seen, entry.revision or 0, self.ttl_s, now):
            if self._seen is None or self._seen.revision != entry.revision:
                self._seen = Seen(entry.revision or 0, record, now)
            return False
        self._revision, self.reason = entry.revision or 0, None  # the deposed holder's words are not ours
        return await self._write((record.epoch if record else 0) + 1, create=False)

    async def _write(self, epoch: int, create: bool) -> bool:
        """Claim the lease in `epoch`; losing the race to another replica is not an error."""
        started = self.clock()
        try:
            if create:
                self._revision = await self.kv.create(LEASE_KEY, self._encode(epoch))
            else:
                self._revision = await self.kv.update(LEASE_KEY, self._encode(epoch), last=self._revision)
        except KeyWrongLastSequenceError:
            return False
        self.epoch, self.holder, self._renewed_at = epoch, self.me, started
        log.info("lease.acquired", epoch=epoch, holder=self.me)
        return True

    async def outrank(self, floor: int) -> bool:
        """Lead on in an epoch above `floor`, one a provisioner obeys (from a lease store since lost or wiped,
        while libvirt kept its VMs): without this it refuses every command of ours. Only the holder may,
        with a renewal's compare-and-set, so no two replicas both do; True when the epoch moved."""
        if not self.leading or self.epoch >= floor:
            return False
        was = self.epoch
        if not await self._renew(floor + 1):
            return False
        log.warning("lease.outranked", was=was, epoch=self.epoch, why="a provisioner obeys a newer epoch")
        return True

    def _lose(self, why: str) -> None:
        log.warning("lease.lost", epoch=self.epoch, reason=why)
        self._renewed_at = None
        self._seen = None

    async def release(self) -> None:
        """Hand the lease over at once on a clean stop (followers see a free lease)."""
        if self._renewed_at is None:
            return
        self._renewed_at = None
        try:
            record = LeaseRecord(holder=None, epoch=self.epoch, renewed_at=utcnow())
            await self.kv.update(LEASE_KEY, record.model_dump_json().encode(), last=self._revision)
            log.info("lease.released", epoch=self.epoch)
        except (NatsError, TimeoutError) as error:
            log.warning("lease.release_failed", error=str(error) or type(error).__name__)

    def _encode(self, epoch: int) -> bytes:
        record = LeaseRecord(holder=self.me, epoch=epoch, renewed_at=utcnow(), reason=self.reason)
        return record.model_dump_json().encode()


def _decode(value: bytes | None) -> LeaseRecord | None:
    """A lease value, or None when it is unreadable (then it counts as free once it expires)."""
    try:
        return LeaseRecord.model_validate_json(value or b"")
    except ValidationError:
        return None
