"""A scale-in that drains the verified VM while its replacement's identity check is still out."""

from __future__ import annotations

import socket

from services.balancer.core.identity import IdentityState
from shared.bus import Bus
from shared.contract.events import VmState
from tests.integration.balancer.h3client import h3_client
from tests.integration.balancer.harness import StartBalancer, announce
from tests.integration.balancer.identity_backends import IdentityH1Backend
from tests.support import wait_until

OLD, NEW = "0a3f1e2c-0000-4000-8000-00000000000a", "0a3f1e2c-0000-4000-8000-00000000000b"


async def test_a_drained_vm_answers_while_its_replacement_is_still_being_verified(
    bus: Bus, start_balancer: StartBalancer
) -> None:
    """With the only verified VM draining and the new one's identity check still on its way, a GET is served by
    the draining VM instead of a 503; once nothing is on its way, a drain with no other VM refuses at once."""
    pending = socket.socket()  # the new VM: accepts, answers nothing yet
    pending.bind(("127.0.0.1", 0))
    pending.listen(8)
    async with IdentityH1Backend(OLD) as old, start_balancer(health_timeout_s=5) as lb:
        router = lb.router
        assert router is not None
        await announce(bus, lb, "vm-old", old.address, uuid=OLD)
        await wait_until(lambda: router.table.backends["vm-old"].verification.state is IdentityState.VERIFIED)
        async with h3_client(lb.port) as client:
            await announce(bus, lb, "vm-new", f"127.0.0.1:{pending.getsockname()[1]}", uuid=NEW)
            await announce(bus, lb, "vm-old", old.address, VmState.DRAINING)
            response = await client.get("/")
            assert response.status == 200 and response.text.strip() == f"Server Address: {old.address}"
            await announce(bus, lb, "vm-new", f"127.0.0.1:{pending.getsockname()[1]}", VmState.DESTROYED)
            assert (await client.get("/")).status == 503
    pending.close()
