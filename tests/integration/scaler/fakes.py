"""Hand-written stand-ins for the provisioner and a balancer, answering on the real NATS server."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from shared.bus import Bus
from shared.contract.base import ErrorCode
from shared.contract.draining import BackendDrained
from shared.contract.events import VmState, VmStateChanged
from shared.contract.load import BackendLoad, BalancerReported
from shared.contract.provisioning import CreateVm, DestroyVm, StartDrain, VmList, VmRecord
from shared.endpoints import error_reply, ok_reply
from tests.support import Collector


class FakeProvisioner:
    """Creates VMs that become ready at once, destroys them, lists them; refuses stale epochs.

    With `max_vms` its list says the ceiling (so the leader places creates on it by name), and with
    `memory_mib` the host's room too: each VM it holds takes `vm_memory_mib` of that memory.

    A pool create (`pooled=True`) makes a VM that boots and is paused in the pool (`pooled`), as the
    real provisioner's does; a plain create takes its most recently pooled VM first (the reply is that VM
    with the new request id; it goes booting, then ready). The first `stale_pooled` pooled VMs are
    announced and listed as paused `stale_age_s` ago, as if they had sat in the pool that long.

    A `StartDrain` marks the VM draining and publishes `fleet.vm.draining` with the deadline, once (a VM
    already draining is answered as it is); the first `refuse_drains` are refused `unavailable` instead.
    """

    def __init__(
        self, bus: Bus, host: str = "h1", max_vms: int | None = None, memory_mib: int | None = None,
        cpus: int | None = None, vm_memory_mib: int = 256, stale_pooled: int = 0, stale_age_s: float = 600.0,
        refuse_drains: int = 0,
    ) -> None:
        self.bus, self.host = bus, host
        self.max_vms, self.memory_mib, self.cpus, self.vm_memory_mib = max_vms, memory_mib, cpus, vm_memory_mib
        self.stale_pooled, self.stale_age_s = stale_pooled, stale_age_s
        self.taken: list[str] = []
        """Pooled VMs a plain create resumed, in order."""
        self.creates: list[CreateVm] = []
        self.destroys: list[DestroyVm] = []
        self.drains: list[StartDrain] = []
        """Every `StartDrain` received, refused ones included."""
        self.refuse_drains = refuse_drains
        self.vms: dict[str, VmRecord] = {}
        self.by_request: dict[str, str] = {}
        self.max_epoch = 0
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        s, nc = self.bus.subjects, self.bus.nc
        self._subs = [
            await nc.subscribe(s.prov_create, queue="provisioners", cb=self._create),
            await nc.subscribe(s.prov_create_on(self.host), cb=self._create),
            await nc.subscribe(s.prov_destroy(self.host), cb=self._destroy),
            await nc.subscribe(s.prov_drain(self.host), cb=self._drain),
            await nc.subscribe(s.prov_list, cb=self._list),
        ]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        for sub in self._subs:
            await sub.unsubscribe()
        for task in list(self._tasks):
            task.cancel()

    def _fenced(self, epoch: int) -> bool:
        if epoch < self.max_epoch:
            return True
        self.max_epoch = epoch
        return False

    async def _create(self, msg: Msg) -> None:
        cmd = CreateVm.model_validate_json(msg.data)
        self.creates.append(cmd)
        if self._fenced(cmd.epoch):
            body, headers = error_reply(ErrorCode.CONFLICT, f"epoch {cmd.epoch} is stale")
            await self.bus.nc.publish(msg.reply, body, headers=headers)
            return
        if cmd.request_id not in self.by_request and not cmd.pooled and (pooled := self.pooled()):
            await self._take(msg, pooled[-1], cmd.request_id)
            return
        name = self.by_request.get(cmd.request_id) or f"{self.host}-vm{len(self.by_request)}"
        self.by_request[cmd.request_id] = name
        record = VmRecord(vm=name, state=VmState.REQUESTED, since=datetime.now(UTC), request_id=cmd.request_id,
                          host=self.host, address=f"127.0.0.1:{5000 + len(self.by_request)}")
        self.vms.setdefault(name, record)
        await msg.respond(ok_reply(record))
        self._spawn(self._boot(self.vms[name], cmd.pooled))

    def pooled(self) -> list[str]:
        """Its pooled VMs, oldest first."""
        return sorted((r.vm for r in self.vms.values() if r.state is VmState.POOLED), key=lambda n: self.vms[n].since)

    async def _take(self, msg: Msg, name: str, request_id: str) -> None:
        """Resume a pooled VM for a plain create: it becomes that create's VM."""
        self.taken.append(name)
        self.by_request[request_id] = name
        update = {"request_id": request_id, "paused": False, "state": VmState.BOOTING, "since": datetime.now(UTC)}
        record = self.vms[name].model_copy(update=update)
        self.vms[name] = record
        await msg.respond(ok_reply(record))
        self._spawn(self._resume(record))

    async def _resume(self, record: VmRecord) -> None:
        await self._publish(record, VmState.BOOTING)
        await self._publish(record, VmState.READY)
        self.vms[record.vm] = record.model_copy(update={"state": VmState.READY, "since": datetime.now(UTC)})

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _boot(self, record: VmRecord, pooled: bool = False) -> None:
        for state in (VmState.REQUESTED, VmState.BOOTING):
            await self._publish(record, state)
        if not pooled:
            await self._publish(record, VmState.READY)
            self.vms[record.vm] = record.model_copy(update={"state": VmState.READY})
            return
        since = datetime.now(UTC)
        if self.stale_pooled > 0:
            self.stale_pooled -= 1
            since -= timedelta(seconds=self.stale_age_s)
        record = record.model_copy(update={"state": VmState.POOLED, "since": since, "paused": True})
        if record.vm in self.vms:  # not destroyed while it booted
            self.vms[record.vm] = record
            await self._publish(record, VmState.POOLED)

    async def pause(self, vm: str, announce: bool = True) -> None:
        """libvirt paused `vm`: its list says so from now on, and with `announce` a republished event too."""
        self.vms[vm] = self.vms[vm].model_copy(update={"paused": True})
        if announce:
            await self._publish(self.vms[vm], self.vms[vm].state)

    async def _publish(self, record: VmRecord, state: VmState) -> None:
        at = record.since if state is VmState.POOLED else datetime.now(UTC)
        event = VmStateChanged(vm=record.vm, state=state, address=record.address, host=self.host,
                               request_id=record.request_id, paused=record.paused, at=at)
        await self.bus.publish(self.bus.subjects.vm(state), event)

    async def _destroy(self, msg: Msg) -> None:
        cmd = DestroyVm.model_validate_json(msg.data)
        self.destroys.append(cmd)
        record = self.vms.pop(cmd.vm, None)
        if self._fenced(cmd.epoch) or record is None:
            code = ErrorCode.CONFLICT if record else ErrorCode.NOT_FOUND
            body, headers = error_reply(code, "refused")
            await self.bus.nc.publish(msg.reply, body, headers=headers)
            return
        gone = record.model_copy(update={"state": VmState.DESTROYED})
        await msg.respond(ok_reply(gone))
        await self._publish(gone, VmState.DESTROYED)

    async def _drain(self, msg: Msg) -> None:
        cmd = StartDrain.model_validate_json(msg.data)
        self.drains.append(cmd)
        record = self.vms.get(cmd.vm)
        refused = self.refuse_drains > 0
        self.refuse_drains = max(0, self.refuse_drains - 1)
        if refused or self._fenced(cmd.epoch) or record is None:
            code = ErrorCode.UNAVAILABLE if refused else ErrorCode.CONFLICT if record else ErrorCode.NOT_FOUND
            body, headers = error_reply(code, "refused")
            await self.bus.nc.publish(msg.reply, body, headers=headers)
            return
        if record.state is not VmState.DRAINING:
            record = record.model_copy(update={"state": VmState.DRAINING, "since": datetime.now(UTC)})
            self.vms[cmd.vm] = record
            event = VmStateChanged(vm=record.vm, state=VmState.DRAINING, address=record.address, host=self.host,
                                   request_id=cmd.request_id, reason="drain", deadline_s=cmd.deadline_s)
            await self.bus.publish(self.bus.subjects.vm(VmState.DRAINING), event)
        await msg.respond(ok_reply(record))

    async def _list(self, msg: Msg) -> None:
        await msg.respond(ok_reply(self.listing()))

    def listing(self) -> VmList:
        """Its VMs and, when it was given them, its ceiling and its room (what its VMs leave free)."""
        free = None if self.memory_mib is None else max(0, self.memory_mib - len(self.vms) * self.vm_memory_mib)
        sized = self.memory_mib is not None or self.cpus is not None
        return VmList(
            host=self.host, vms=list(self.vms.values()), max_vms=self.max_vms, free_memory_mib=free, cpus=self.cpus,
            vm_memory_mib=self.vm_memory_mib if sized else None, vm_vcpus=1 if sized else None,
        )


class FakeBalancer:
    """Reports per-VM outstanding counts every `interval_s` and drains at once on each `fleet.vm.draining`."""

    def __init__(self, bus: Bus, name: str = "b1", interval_s: float = 0.2) -> None:
        self.bus, self.name, self.interval_s = bus, name, interval_s
        self.outstanding: dict[str, int] = {}
        self.unhealthy: set[str] = set()
        """VMs reported as not routable (ejected or failing checks), as a real balancer would."""
        self.drains: list[VmStateChanged] = []
        self._task: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None

    async def __aenter__(self) -> Self:
        self._sub = await self.bus.subscribe(self.bus.subjects.vm(VmState.DRAINING), VmStateChanged, self._drain)
        self._task = asyncio.create_task(self._report())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._task:
            self._task.cancel()
        if self._sub:
            await self._sub.unsubscribe()

    async def _report(self) -> None:
        started = datetime.now(UTC)
        while True:
            backends = [BackendLoad(vm=vm, outstanding=n, routable=vm not in self.unhealthy)
                        for vm, n in self.outstanding.items()]
            report = BalancerReported(balancer=self.name, started_at=started, interval_s=self.interval_s,
                                      address="127.0.0.1:8443", backends=backends)
            await self.bus.publish(self.bus.subjects.balancer_report, report)
            await asyncio.sleep(self.interval_s)

    async def _drain(self, event: VmStateChanged, _msg: Msg) -> None:
        self.drains.append(event)
        self.outstanding.pop(event.vm, None)
        done = BackendDrained(vm=event.vm, balancer=self.name, request_id=event.request_id)
        await self.bus.publish(self.bus.subjects.balancer_drained, done)


async def decisions(bus: Bus) -> Collector:
    """Every `fleet.scaler.decision` from now on."""
    collector = Collector()

    async def on_message(msg: object) -> None:
        await collector(msg)

    await bus.nc.subscribe(bus.subjects.scaler_decision, cb=on_message)
    return collector
