"""The balancer in `l4` mode: the same membership, checks, drains and reports, and no data plane of its own.

It binds no client port: the kernel's nftables table (`plane.L4Plane`) passes clients' QUIC to
the VMs. What stays is what decides where new flows go (the router's table, fed by `fleet.vm.*`
and the HTTP/3 health and identity checks), the drains (over when conntrack shows no flow to the
VM, or at the deadline), the load report (with each VM's flows, packets and bytes) and the admin
port. Stopping says `draining` on `/readyz` first, then removes the table, the tc filters and the
pinned maps; established flows keep their conntrack entries.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from services.balancer.core.l4plane import with_flows
from services.balancer.l4.build import vip_of
from services.balancer.l4.plane import L4Plane
from services.balancer.service import BalancerService, Hooks, Plane
from services.balancer.settings import BalancerSettings
from shared.bus import Bus
from shared.contract.events import VmStateChanged
from shared.contract.load import BalancerReported

log = structlog.get_logger("balancer.l4")


class L4Service(BalancerService):
    """quicfleet's balancer in `l4` mode: follows the fleet over NATS and programs the kernel to match."""

    description = "quicfleet L4 balancer (kernel passthrough)"

    def __init__(self, settings: BalancerSettings, build: Callable[[Hooks], Plane], bus: Bus | None = None) -> None:
        super().__init__(settings, build, bus)
        if self.l4 is None:
            raise ValueError("an l4 balancer needs an L4Plane")
        self.plane: L4Plane = self.l4
        self.serving = False
        """Set once the kernel has its first map (until then `/readyz` says `starting`)."""

    async def on_start(self) -> None:
        """Admin port, the kernel's table, the fleet, the first map; then the loops."""
        if self.metrics is not None:
            await self.metrics.start()
        await self.plane.start()
        await self.bus.subscribe(self.subjects.vm_all, VmStateChanged, self._vm_event)
        await self._learn_fleet()
        await self.plane.sync()
        self.serving = True
        self.spawn(self.plane.run(), "balancer-l4")
        self.spawn(self._report_loop(), "balancer-report")
        self.spawn(self._health_loop(), "balancer-health")
        log.info("balancer.l4_started", balancer=self.balancer_id, mode="l4", address=self.address,
                 netns=self.settings.balancer_l4_netns, cid_learning=self.plane.cid is not None,
                 why=self.plane.cid_note, backends=len(self.router.table))

    @property
    def address(self) -> str:
        """Where clients connect: the VIP and the service port (the kernel's, no socket of ours)."""
        return self.settings.advertise_address or f"{vip_of(self.settings)}:{self.settings.listen_port}"

    def _not_ready(self) -> str | None:
        if self.draining:
            return "draining"
        return None if self.serving else "starting"

    def reload_certificate(self) -> bool:
        """No certificate in l4: the VMs hold their own."""
        return False

    async def on_stop(self) -> None:
        """`/readyz` says draining already (`stop`); remove the table, filters and maps, then the rest."""
        try:
            await self.plane.close()
        finally:
            self.router.close()
            if self.metrics is not None:
                await self.metrics.close()
        log.info("balancer.l4_stopped", balancer=self.balancer_id)

    def report(self) -> BalancerReported:
        """The load report with the kernel's figures: per VM flows, packets, bytes; `connections` = all flows."""
        flows = self.plane.flows
        report = with_flows(super().report(), flows)
        return report.model_copy(update={"connections": sum(f.entries for f in flows.values())})
