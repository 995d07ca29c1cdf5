"""A fake provisioner that clones template versions: each VM carries the version its create asked for.

Versions listed in `broken` never pass readiness: their VMs go requested -> booting -> failed, as the
real provisioner's do when the guest's web server never starts or answers as another VM.
"""

from __future__ import annotations

from datetime import UTC, datetime

from nats.aio.msg import Msg

from shared.contract.events import VmState, VmStateChanged
from shared.contract.provisioning import CreateVm, VmList, VmRecord
from tests.integration.scaler.fakes import FakeProvisioner


class VersionedProvisioner(FakeProvisioner):
    """`FakeProvisioner` whose VMs, events and lists carry the create's `version`."""

    def __init__(self, *args: object, broken: frozenset[str] = frozenset(), **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.broken = broken
        self.by_version: dict[str, str | None] = {}
        """The version of each create's request id (pooled VMs are not used by these tests)."""

    async def _create(self, msg: Msg) -> None:
        cmd = CreateVm.model_validate_json(msg.data)
        self.by_version.setdefault(cmd.request_id, cmd.version)
        await super()._create(msg)

    def version_of(self, vm: str) -> str | None:
        record = self.vms.get(vm)
        return self.by_version.get(record.request_id or "") if record else None

    async def _boot(self, record: VmRecord, pooled: bool = False) -> None:
        if self.by_version.get(record.request_id or "") not in self.broken:
            await super()._boot(record, pooled)
            return
        for state in (VmState.REQUESTED, VmState.BOOTING):
            await self._publish(record, state)
        self.vms[record.vm] = record.model_copy(update={"state": VmState.FAILED})
        event = VmStateChanged(vm=record.vm, state=VmState.FAILED, host=self.host, request_id=record.request_id,
                               reason="readiness: the web server never answered", at=datetime.now(UTC),
                               version=self.by_version.get(record.request_id or ""))
        await self.bus.publish(self.bus.subjects.vm(VmState.FAILED), event)

    async def _publish(self, record: VmRecord, state: VmState) -> None:
        version = self.by_version.get(record.request_id or "")
        event = VmStateChanged(vm=record.vm, state=state, address=record.address, host=self.host,
                               request_id=record.request_id, paused=record.paused, at=datetime.now(UTC),
                               version=version)
        await self.bus.publish(self.bus.subjects.vm(state), event)

    def listing(self) -> VmList:
        plain = super().listing()
        vms = [r.model_copy(update={"version": self.by_version.get(r.request_id or "")}) for r in plain.vms]
        return plain.model_copy(update={"vms": vms})

    def on(self, version: str | None) -> list[str]:
        """Its live VMs of `version`, failed ones aside."""
        return sorted(n for n, r in self.vms.items() if r.state is not VmState.FAILED and self.version_of(n) == version)
