"""Template rollout: the commands that replace the fleet's VMs by a new template version, and its state.

The scaler's leader runs a rollout (docs/services/scaler.md, "Rollout"): batches within a surge and a
minimum healthy share of ready capacity, a canary batch baked first, checkpoints where it waits, and an
automatic rollback when the new version does worse than the old one. Its state is kept in the scaler's
KV bucket (`RolloutState`), so a new leader continues it. Commands are strict like every command; the
`RolloutChanged` event is tolerant like every event.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, field_validator

from shared.contract.base import Event, EventPart, Message, Model, Name, Reason, utcnow
from shared.contract.policy import MAX_FLEET
from shared.contract.templates import VersionId

__all__ = [
    "AbortRollout", "GetRollout", "PauseRollout", "ResumeRollout", "RolloutChanged", "RolloutPhase",
    "RolloutSettings", "RolloutState", "RolloutStatus", "StartRollout", "VersionCount", "VersionHealth",
]

CHECKPOINTS_MAX = 10
Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Amount = Annotated[float, Field(ge=0, le=1e15, allow_inf_nan=False)]


class RolloutPhase(StrEnum):
    """Where a rollout is: replacing (canary, rolling, rolling back), waiting (baking, paused) or over."""

    CANARY = "canary"
    """The first batch (`canary` VMs) is being replaced."""
    BAKING = "baking"
    """The canary serves beside the old version for `bake_s` while the two are compared."""
    ROLLING = "rolling"
    PAUSED = "paused"
    """Waiting for `fleet.cmd.rollout.resume` (a checkpoint, or a pause command); batches in flight finish."""
    ROLLING_BACK = "rolling_back"
    """The new version's VMs are being replaced by the old version's, the same way."""
    DONE = "done"
    ROLLED_BACK = "rolled_back"


ACTIVE_PHASES = frozenset(
    {RolloutPhase.CANARY, RolloutPhase.BAKING, RolloutPhase.ROLLING, RolloutPhase.PAUSED, RolloutPhase.ROLLING_BACK}
)
"""Phases in which VMs are still being replaced or a resume is awaited: a second rollout is refused."""


class RolloutSettings(Model):
    """How a rollout replaces VMs (AWS instance refresh and Kubernetes rollouts have the same knobs)."""

    max_surge: Annotated[int, Field(ge=1, le=MAX_FLEET, strict=True)] = Field(
        default=1, description="VMs above the desired size at once (the new ones booting beside those they replace)."
    )
    min_healthy_share: Share = Field(
        default=1.0, description="Share of the desired size that must stay ready and serving (1: replace surge-first)."
    )
    canary: Annotated[int, Field(ge=0, le=MAX_FLEET, strict=True)] = Field(
        default=1, description="VMs in the first batch, baked before the rest (0: no canary, no bake)."
    )
    bake_s: Annotated[float, Field(ge=0, le=86_400, allow_inf_nan=False)] = Field(
        default=60.0, description="How long the canary serves beside the old version before the rollout goes on."
    )
    checkpoints: Annotated[list[Annotated[float, Field(gt=0, lt=100, allow_inf_nan=False)]],
                           Field(max_length=CHECKPOINTS_MAX)] = Field(
        default=[], description="Percentages of the fleet on the new version at which the rollout pauses."
    )
    min_requests: Annotated[int, Field(ge=1, le=10**9, strict=True)] = Field(
        default=100, description="Requests each version must have served before their error shares and latencies "
                                 "are compared (fewer: no verdict yet)."
    )

    @field_validator("checkpoints")
    @classmethod
    def _sorted(cls, value: list[float]) -> list[float]:
        return sorted(set(value))


class StartRollout(RolloutSettings, Message):
    """`fleet.cmd.rollout.start`: replace the fleet's VMs by clones of `version` (ready on the hosts)."""

    version: VersionId


class PauseRollout(Message):
    """`fleet.cmd.rollout.pause`: start no new batch (the batch in flight finishes) until a resume."""

    reason: Reason | None = None


class ResumeRollout(Message):
    """`fleet.cmd.rollout.resume`: go on from a pause or a checkpoint."""


class AbortRollout(Message):
    """`fleet.cmd.rollout.abort`: stop and roll back: the new version's VMs are replaced by the old version's."""

    reason: Reason | None = None


class GetRollout(Message):
    """`fleet.cmd.rollout.status`: the rollout's state and the fleet's VMs per version."""


class VersionHealth(Model):
    """What one version's VMs served during the rollout, summed from the load snapshots (compared, not judged)."""

    version: VersionId | None = None
    requests: Amount = 0.0
    errors: Amount = 0.0
    latency_s: Amount = Field(default=0.0, description="Sum of p95 latency x requests (divide by requests).")

    @property
    def error_share(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p95_s(self) -> float:
        return self.latency_s / self.requests if self.requests else 0.0


class RolloutState(Message):
    """The rollout as kept in the scaler's KV bucket (key `rollout`): enough for any new leader to go on."""

    phase: RolloutPhase
    old_version: VersionId | None = Field(default=None, description="The version it replaces (None: the template "
                                                                     "domain itself); a rollback returns to it.")
    new_version: VersionId
    settings: RolloutSettings = Field(default_factory=RolloutSettings)
    started_at: datetime = Field(default_factory=utcnow)
    phase_since: datetime = Field(default_factory=utcnow)
    paused_phase: RolloutPhase | None = Field(default=None, description="The phase a resume returns to.")
    checkpoints_passed: Annotated[int, Field(ge=0, le=CHECKPOINTS_MAX)] = 0
    replaced: Annotated[int, Field(ge=0, le=10**6)] = Field(default=0, description="VMs put into a batch so far.")
    batch: Annotated[list[Name], Field(max_length=MAX_FLEET)] = Field(
        default=[], description="VMs being replaced now: they serve until the minimum healthy share lets them drain."
    )
    health: Annotated[list[VersionHealth], Field(max_length=2)] = []
    reason: Reason | None = None

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE_PHASES

    @property
    def target(self) -> str | None:
        """The version VMs are cloned from now: the new one, or the old one once rolling back (or rolled back)."""
        back = self.phase in (RolloutPhase.ROLLING_BACK, RolloutPhase.ROLLED_BACK)
        return self.old_version if back else self.new_version


class VersionCount(EventPart):
    """The fleet's VMs of one version: serving (ready), starting, pooled and leaving (draining or destroyed)."""

    version: VersionId | None = None
    ready: Annotated[int, Field(ge=0, le=100_000)] = 0
    starting: Annotated[int, Field(ge=0, le=100_000)] = 0
    pooled: Annotated[int, Field(ge=0, le=100_000)] = 0
    leaving: Annotated[int, Field(ge=0, le=100_000)] = 0


class RolloutStatus(Model):
    """Reply to every rollout command: the rollout (None: never started) and the fleet's VMs per version."""

    rollout: RolloutState | None = None
    versions: Annotated[list[VersionCount], Field(max_length=64)] = []
    leader: Name | None = None


class RolloutChanged(Event):
    """`fleet.scaler.rollout`: the leader's rollout moved (phase, batch, counts), and why."""

    at: datetime = Field(default_factory=utcnow)
    phase: RolloutPhase
    old_version: VersionId | None = None
    new_version: VersionId
    versions: Annotated[list[VersionCount], Field(max_length=64)] = []
    batch: Annotated[list[Name], Field(max_length=MAX_FLEET)] = []
    reason: Reason | None = None
    leader: Name | None = None
