"""The l4 parts from settings: the kernel's passthrough, connection-ID learning, and the loop joining them.

Nothing here touches the kernel: the passthrough is set up and learning attached when the
service starts (`L4Plane.start`), so building a balancer stays free of side effects.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Mapping

from services.balancer.core.backends import Backend
from services.balancer.core.l4plane import FlowBook
from services.balancer.core.passthrough import L4Target, TableSpec
from services.balancer.l4.cid import CidSteering
from services.balancer.l4.nft import Passthrough
from services.balancer.l4.plane import CidPort, L4Plane, Learning, PassthroughPort
from services.balancer.proxy.router import Router
from services.balancer.settings import BalancerSettings

LIST_TIMEOUT_S = 10.0


def passthrough_of(settings: BalancerSettings) -> Passthrough:
    """The nftables passthrough for the service clients reach (the VIP, `listen_port`)."""
    spec = TableSpec(vip=vip_of(settings), port=settings.listen_port, buckets=settings.balancer_l4_buckets,
                     conntrack_timeout_s=settings.balancer_l4_conntrack_timeout_s,
                     vm_network=settings.balancer_l4_vm_network, live_within_s=settings.balancer_l4_flow_live_s)
    return Passthrough(spec, netns=settings.balancer_l4_netns)


def vip_of(settings: BalancerSettings) -> str:
    """The virtual address clients reach: `balancer_l4_address`, else `listen_host`."""
    return settings.balancer_l4_address or settings.listen_host


def target_of(backend: Backend) -> L4Target:
    """A routable VM as the kernel's target: its id, address and port."""
    return L4Target(vm=backend.vm, address=backend.host, port=backend.port)


def make_l4(settings: BalancerSettings, router: Router, book: FlowBook, passthrough: PassthroughPort) -> L4Plane:
    """The l4 loop over `passthrough`; with connection-ID learning over the nftables one (it plans the slots)."""
    interval = settings.balancer_l4_sync_interval_s
    reads = settings.balancer_report_interval_s  # the report carries the latest reading: no need to read more often
    if not isinstance(passthrough, Passthrough):  # a fake kernel (tests): nothing to learn for
        return L4Plane(router, passthrough, target_of, interval, book, read_every_s=reads)
    return L4Plane(router, passthrough, target_of, interval, book, make_learning(settings), passthrough.slots,
                   read_every_s=reads)


def make_learning(settings: BalancerSettings) -> Learning:
    """Attaches connection-ID learning at start, on the client-facing interfaces and the VMs' bridge."""

    async def attach() -> tuple[CidPort | None, str]:
        clients = await client_ifaces(settings)
        steering = await asyncio.to_thread(
            CidSteering.attach, clients, [settings.balancer_l4_vm_iface], settings.balancer_l4_cid_length,
            settings.balancer_state_dir.resolve() / "bpf", settings.balancer_l4_netns, vip=vip_of(settings),
            port=settings.listen_port, bpf_object=settings.balancer_l4_bpf_object,
        )
        if steering is None:
            return None, "off: see balancer.l4.cid_learning_off for why (BPF, the object or tc missing)"
        return steering, f"on: client side {','.join(clients)}, VM side {settings.balancer_l4_vm_iface}"

    return attach


async def client_ifaces(settings: BalancerSettings) -> list[str]:
    """The configured client-facing interfaces, else every one but lo, the VMs' bridge and its ports."""
    configured = [name.strip() for name in settings.balancer_l4_client_ifaces.split(",") if name.strip()]
    if configured:
        return configured
    links = await asyncio.to_thread(list_links, settings.balancer_l4_netns)
    return client_side(links, settings.balancer_l4_vm_iface)


def client_side(links: list[Mapping[str, object]], vm_iface: str) -> list[str]:
    """From `ip -j link` entries: the interfaces that are neither loopback, the VM bridge nor one of its ports."""
    return sorted(
        str(link["ifname"]) for link in links
        if link.get("ifname") not in ("lo", vm_iface) and link.get("master") != vm_iface
    )


def list_links(netns: str | None) -> list[Mapping[str, object]]:
    """`ip -j link show` in the programmed namespace."""
    argv = ["ip", *(["-n", netns] if netns else []), "-j", "link", "show"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=LIST_TIMEOUT_S, check=True)
    links: list[Mapping[str, object]] = json.loads(done.stdout or "[]")
    return links
