"""The desired state in JetStream KV: read it, and change it with revision-checked writes.

Any replica may change it (a follower answering `fleet.cmd.scale` stores the new size; the
leader stores what the autoscaler chose), so every write names the revision it read and is
retried from a fresh read when another replica got there first.
"""

from __future__ import annotations

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

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self.current = DesiredState()
        self.revision = 0

    async def refresh(self) -> DesiredState:
        """Read the latest value (a missing key is the default state; a corrupt one is logged and kept)."""
        try:
            entry = await self.kv.get(DESIRED_KEY)
        except KeyNotFoundError:
            self.revision = 0
            return self.current
        try:
            self.current = DesiredState.model_validate_json(entry.value or b"")
        except ValidationError:
            log.error("store.corrupt_value", key=DESIRED_KEY, revision=entry.revision)
        self.revision = entry.revision or 0
        return self.current

    async def change(self, edit: Callable[[DesiredState], DesiredState]) -> DesiredState:
        """Apply `edit` to the latest value and store it; `edit` may raise BusError to refuse."""
        for _ in range(ATTEMPTS):
            latest = await self.refresh()
            if await self.write(edit(latest), self.revision):
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
            return False
        self.current = state
        return True
