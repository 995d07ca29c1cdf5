"""What each provisioner says about its room, on libvirt's test driver: the host's figures and its template's size."""

from __future__ import annotations

from contextlib import AsyncExitStack

from ops.natsserver import NatsServer
from services.provisioner.bootstrap import bootstrap
from services.provisioner.libvirt_adapter import LibvirtHypervisor
from shared.bus import Bus
from shared.contract.provisioning import ListVms, VmList
from tests.integration.provisioner.conftest import URI, VM_MEMORY_MIB, World, template_xml
from tests.support import wait_until


def driver_figures(world: World) -> tuple[int, int]:
    """The test driver's CPUs and free MiB as our own connection reads them (free capped at the host's total)."""
    info = world.conn.getInfo()
    return info[2], min(world.conn.getFreeMemory() // 2**20, info[1])


def test_the_adapter_reads_the_hosts_cpus_and_free_memory(world: World) -> None:
    """`host_facts` gives libvirt's CPU count and free memory (the test driver has no memory stats to add)."""
    hv = LibvirtHypervisor(URI)
    hv.open(lambda _event: None)
    try:
        facts = hv.host_facts()
    finally:
        hv.close()
    assert (facts.cpus, facts.free_memory_mib) == driver_figures(world)


async def test_each_hosts_list_says_its_room_and_the_size_of_its_templates_vms(
    bus: Bus, nats_server: NatsServer, world: World
) -> None:
    """Two provisioners with templates of different sizes each answer `fleet.prov.list` with the driver's
    CPUs and free memory and their own template's memory and vCPUs."""
    other = f"{world.template}-2"
    world.conn.defineXML(template_xml(other, world.template_volume, memory_mib=3, vcpus=2))
    try:
        async with AsyncExitStack() as stack:
            for host, template in ((f"{world.host}-a", world.template), (f"{world.host}-b", other)):
                await stack.enter_async_context(bootstrap(world.settings(nats_server, host=host, template=template)))

            async def both() -> list[VmList] | None:
                lists = await bus.gather(bus.subjects.prov_list, ListVms(), VmList, window=0.5)
                return lists if len(lists) == 2 else None

            lists = await wait_until(both, 20, what="both hosts' lists")
    finally:
        world.conn.lookupByName(other).undefine()
    cpus, free = driver_figures(world)
    sizes = {vl.host: (vl.cpus, vl.free_memory_mib, vl.vm_memory_mib, vl.vm_vcpus) for vl in lists}
    assert sizes == {f"{world.host}-a": (cpus, free, VM_MEMORY_MIB, 1), f"{world.host}-b": (cpus, free, 3, 2)}
