"""What the balancer's integration tests share besides fixtures: announcing VMs the way the provisioner does."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg

from services.balancer.service import BalancerService
from shared.bus import Bus
from shared.contract.events import VmState, VmStateChanged
from shared.contract.provisioning import VmList, VmRecord
from shared.endpoints import ok_reply
from tests.support import wait_until

StartBalancer = Callable[..., Any]


async def announce(
    bus: Bus, service: BalancerService, vm: str, address: str, state: VmState = VmState.READY, uuid: str | None = None
) -> None:
    """Publish a VM event as the provisioner would, and wait until the balancer applied it.

    With `uuid` the VM is announced as one that sends it in `x-quicfleet-vm` (`identity`).
    """
    event = VmStateChanged(vm=vm, state=state, address=address, uuid=uuid, identity=uuid is not None)
    await bus.publish(bus.subjects.vm(state), event)
    router = service.router
    identity = uuid if service.settings.balancer_identity_check else None

    def applied() -> bool:
        backend = router.table.get(vm)
        if state is VmState.READY:
            return (
                backend is not None
                and backend.address == address
                and not backend.draining
                and backend.identity == identity
            )
        if state is VmState.DRAINING:
            return backend is not None and backend.draining
        return backend is None

    await wait_until(applied, timeout=10, what=f"{vm} {state.value}")


Announce = Callable[[Bus, BalancerService, str, str], Awaitable[None]]


async def list_as_provisioner(bus: Bus, vm: str, address: str) -> None:
    """Answer `ListVms` as a provisioner with one ready VM, so a balancer knows it before it binds its port
    (as with a real provisioner; `announce` comes only after the port is bound)."""
    record = VmRecord(vm=vm, state=VmState.READY, address=address, since=datetime.now(UTC), host="h1")

    async def listing(msg: Msg) -> None:
        await msg.respond(ok_reply(VmList(host="h1", vms=[record])))

    await bus.nc.subscribe(bus.subjects.prov_list, cb=listing)
