"""The desired state in JetStream KV: read it, and change it with revision-checked writes.

Any replica may change it (a follower answering `fleet.cmd.scale` stores the new size; the
leader stores what the autoscaler chose), so every write names the revision it read and is
retried from a fresh read when another replica got there first.

A write that succeeds leaves this replica holding the value at the revision it just made, so a
command costs one compare-and-set write and no read: the copy is read again only when it may be
old (a write was refused, another replica announced a change, or it is older than the caller's
bound, the safety net for a lost announcement).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from shared.contract.base import ErrorCode, utcnow
from shared.contract.status import DesiredState
from shared.errors import BusError

log = structlog.get_logger("services.scaler.store")

DESIRED_KEY = "desired"
ATTEMPTS = 5


class DesiredStore:
    """The `desired` key and this replica's latest copy of it."""

    def __init__(self, kv: KeyValue, clock: Callable[[], float] = time.monotonic) -> None:
        self.kv, self.clock = kv, clock
        self.current = DesiredState()
        self.revision = 0
        self.stale = True
        """The copy may be behind the key: read it before trusting it."""
        self.confirmed_at = float("-inf")
        """When a read or a write last showed the copy to be the key's latest value (`clock`)."""

    def heard(self, state: DesiredState) -> None:
        """A `fleet.scaler.state` announcement: our own write's echo is the value we hold; any other is news."""
        if state != self.current:
            self.stale = True

    async def sync(self, max_age_s: float) -> DesiredState:
        """The latest value, read only when the copy may be old."""
        if self.stale or self.clock() - self.confirmed_at >= max_age_s:
            return await self.refresh()
        return self.current

    async def refresh(self) -> DesiredState:
        """Read the latest value (a missing key is the default state; a corrupt one is logged and kept)."""
        try:
            entry = await self.kv.get(DESIRED_KEY)
        except KeyNotFoundError:
            self.revision = 0
            self._confirmed()
            return self.current
        try:
            self.current = DesiredState.model_validate_json(entry.value or b"")
        except ValidationError:
            log.error("store.corrupt_value", key=DESIRED_KEY, revision=entry.revision)
        self.revision = entry.revision or 0
        self._confirmed()
        return self.current

    async def change(self, edit: Callable[[DesiredState], DesiredState]) -> DesiredState:
        """Apply `edit` to the copy and store it with one revision-checked write; `edit` may raise BusError.

        Only when the copy turns out old (the write is refused) or may be (it is stale, or `edit` refused
        a copy not just read) is the key read and `edit` applied again, so no refusal rests on old data.
        """
        for _ in range(ATTEMPTS):
            read = self.stale
            if read:
                await self.refresh()
            try:
                state = edit(self.current)
            except BusError:
                if read:
                    raise
                self.stale = True
                continue
            if await self.write(state, self.revision):
                return self.current
        raise BusError(ErrorCode.CONFLICT, "the desired state kept changing under this command; try again")

    async def write(self, state: DesiredState, revision: int) -> bool:
        """Store `state` if the key is still at `revision`; False when another write came first."""
        state = state.model_copy(update={"updated_at": utcnow()})
        data = state.model_dump_json().encode()
        try:
            if revision == 0:
                self.revision = await self.kv.create(DESIRED_KEY, data)
            else:
                self.revision = await self.kv.update(DESIRED_KEY, data, last=revision)
        except KeyWrongLastSequenceError:
            self.stale = True
            return False
        except BaseException:
            self.stale = True  # a write that timed out may or may not have landed
            raise
        self.current = state
        self._confirmed()
        return True

    def _confirmed(self) -> None:
        self.stale, self.confirmed_at = False, self.clock()
