"""The scaler service (skeleton: answers the public commands from in-memory state)."""

from __future__ import annotations

from pydantic import ValidationError

from services.scaler.settings import ScalerSettings
from shared.bus import Bus
from shared.contract.base import ErrorCode
from shared.contract.commands import DrainVm, GetStatus, PolicyPatch, ScaleFleet
from shared.contract.policy import ScalingPolicy
from shared.contract.status import DesiredState, FleetStatus
from shared.endpoints import Endpoint
from shared.errors import BusError, describe_validation_error
from shared.runtime import BusService


class ScalerService(BusService):
    """quicfleet's scaler: owns the desired fleet size and the policy."""

    name = "scaler"
    description = "quicfleet scaler: desired fleet size, policy and public commands"

    def __init__(self, settings: ScalerSettings, bus: Bus | None = None) -> None:
        super().__init__(settings, bus)
        self.settings: ScalerSettings = settings
        self.state = DesiredState()

    def endpoints(self) -> list[Endpoint]:
        s = self.subjects
        return [
            Endpoint("status", s.cmd_status, GetStatus, self.status),
            Endpoint("scale", s.cmd_scale, ScaleFleet, self.scale),
            Endpoint("policy", s.cmd_policy, PolicyPatch, self.set_policy),
            Endpoint("drain", s.cmd_drain, DrainVm, self.drain),
        ]

    async def status(self, _cmd: GetStatus) -> FleetStatus:
        return FleetStatus(desired=self.state.desired, policy=self.state.policy)

    async def scale(self, cmd: ScaleFleet) -> DesiredState:
        policy = self.state.policy
        if not policy.min_replicas <= cmd.replicas <= policy.max_replicas:
            raise BusError(
                ErrorCode.INVALID,
                f"replicas {cmd.replicas} is outside the policy's bounds "
                f"[{policy.min_replicas}, {policy.max_replicas}]",
            )
        self.state = self.state.model_copy(update={"desired": cmd.replicas})
        return self.state

    async def set_policy(self, patch: PolicyPatch) -> ScalingPolicy:
        try:
            policy = patch.apply(self.state.policy)
        except ValidationError as error:
            raise BusError(ErrorCode.INVALID, describe_validation_error(error)) from None
        self.state = self.state.model_copy(update={"policy": policy})
        return policy

    async def drain(self, cmd: DrainVm) -> None:
        raise BusError(ErrorCode.NOT_FOUND, f"no VM named {cmd.vm} in the fleet")
