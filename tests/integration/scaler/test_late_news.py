"""The scaler on a real nats-server when news about a destroyed VM arrives late (seen on real VMs)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from nats.aio.msg import Msg

from services.scaler.bootstrap import bootstrap
from services.scaler.service import ScalerService
from services.scaler.settings import ScalerSettings
from shared.bus import Bus
from shared.contract.commands import ScaleFleet
from shared.contract.events import VmState, VmStateChanged
from shared.contract.provisioning import VmList, VmRecord
from shared.contract.status import DesiredState
from shared.endpoints import ok_reply
from tests.integration.scaler.fakes import FakeBalancer, FakeProvisioner
from tests.support import wait_until


class StaleLister(FakeProvisioner):
    """Answers `fleet.prov.list` with a snapshot frozen earlier: every list predates the destroys."""

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.frozen: list[VmRecord] | None = None
        self.lists = 0

    async def _list(self, msg: Msg) -> None:
        self.lists += 1
        vms = self.frozen if self.frozen is not None else list(self.vms.values())
        await msg.respond(ok_reply(VmList(host=self.host, vms=vms)))


@asynccontextmanager
async def scaler() -> AsyncIterator[ScalerService]:
    async with bootstrap(ScalerSettings(scaler_id="s1", lease_ttl_s=2.0, scaler_resync_s=0.2)) as service:
        await wait_until(lambda: service._lease is not None and service.leading, 20, what="leadership")
        yield service


async def test_lists_from_before_a_destroy_never_bring_a_vm_back_for_a_second_drain(
    bus: Bus, settings_env: dict[str, str]
) -> None:
    """Scaling 3 -> 1 while every list still shows three ready VMs drains and destroys each victim exactly once."""
    events: list[VmStateChanged] = []

    async def keep(event: VmStateChanged, _msg: Msg) -> None:
        events.append(event)

    await bus.subscribe(bus.subjects.vm_all, VmStateChanged, keep)
    async with StaleLister(bus) as prov, FakeBalancer(bus) as balancer, scaler() as service:
        await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=3), DesiredState)
        await wait_until(lambda: sum(v.state is VmState.READY for v in prov.vms.values()) == 3, 20, what="3 ready")
        prov.frozen = list(prov.vms.values())
        await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=1), DesiredState)
        await wait_until(lambda: len(prov.vms) == 1, 30, what="two VMs destroyed")
        seen = prov.lists
        await wait_until(lambda: prov.lists >= seen + 5, 30, what="five more stale lists")
        await wait_until(lambda: len(service.fleet.vms) == 1, 10, what="the scaler's view at one VM")
    assert sorted(Counter(d.vm for d in balancer.drains).values()) == [1, 1]
    assert len(prov.destroys) == 2
    destroyed = {e.vm for e in events if e.state is VmState.DESTROYED}
    ends = {vm: max(i for i, e in enumerate(events) if e.vm == vm and e.state is VmState.DESTROYED) for vm in destroyed}
    late = [e for i, e in enumerate(events) if e.vm in ends and i > ends[e.vm]]
    assert late == []
