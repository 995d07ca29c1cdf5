"""`balancer_hosts`: a balancer serves only the VMs of the provisioner hosts it names (an l4 host's own)."""

from __future__ import annotations

from shared.bus import Bus
from shared.contract.events import VmState, VmStateChanged
from tests.integration.balancer.harness import StartBalancer
from tests.support import wait_until


async def test_a_balancer_naming_its_host_ignores_another_hosts_vms(bus: Bus, start_balancer: StartBalancer) -> None:
    """With `balancer_hosts=h1` an h2 VM's ready event adds nothing, while an h1 VM announced after it is added."""
    async with start_balancer(balancer_hosts="h1") as lb:
        for vm, host in (("vm-other", "h2"), ("vm-unnamed", None), ("vm-mine", "h1")):
            event = VmStateChanged(vm=vm, state=VmState.READY, address="127.0.0.1:9", host=host)
            await bus.publish(bus.subjects.vm(VmState.READY), event)
        await wait_until(lambda: lb.router.table.get("vm-mine") is not None, 10, what="h1's VM in the table")
        assert sorted(lb.router.table.backends) == ["vm-mine"]


async def test_without_hosts_every_hosts_vm_is_served(bus: Bus, start_balancer: StartBalancer) -> None:
    """Unset, the balancer takes every host's VMs (one host, or l7 balancers in front of several)."""
    async with start_balancer() as lb:
        for vm, host in (("vm-a", "h2"), ("vm-b", "h1")):
            await bus.publish(bus.subjects.vm(VmState.READY),
                              VmStateChanged(vm=vm, state=VmState.READY, address="127.0.0.1:9", host=host))
        await wait_until(lambda: len(lb.router.table.backends) == 2, 10, what="both VMs in the table")
