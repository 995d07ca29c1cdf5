"""The balancer service: HTTP/3 data plane plus its NATS side (membership, drains, reports).

The service is handed its parts built (`Plane`, by `bootstrap`); it connects to NATS, learns
the fleet, binds the client ports and runs the loops, in that order, and stops them in reverse.
It is `ready` (the admin port's `/readyz`) from the bound ports until a drain begins; SIGHUP
re-reads the certificate for new connections (`process.certreload`).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from nats.aio.msg import Msg

from services.balancer.core.drain import DrainOver
from services.balancer.core.reporting import build_report
from services.balancer.l4.plane import L4Plane
from services.balancer.process.endpoint import MetricsEndpoint
from services.balancer.process.reclaim import Reclaimer
from services.balancer.process.workers import Workers
from services.balancer.proxy.membership import apply_event, apply_listing, serves
from services.balancer.proxy.router import Router
from services.balancer.quic import Engine
from services.balancer.quic.server import ProxyServer
from services.balancer.settings import BalancerSettings
from services.balancer.tcp.listener import TcpListener
from services.balancer.upstream.checks import Verifier, check_all
from shared.bus import Bus
from shared.contract.draining import BackendDrained
from shared.contract.events import VmStateChanged
from shared.contract.load import BalancerReported
from shared.contract.provisioning import ListVms, VmList
from shared.logging import bind_message
from shared.runtime import BusService

log = structlog.get_logger("balancer.service")


@dataclass(frozen=True)
class Hooks:
    """What the data plane tells the service, which owns the bus: drains that ended, and the bus's
    dropped-input counts for `/metrics` (read at scrape time, so before start they are empty)."""

    drained: Callable[[DrainOver], None]
    rejected_inputs: Callable[[], Mapping[str, int]]
    not_ready: Callable[[], str | None]
    """Why the service itself takes no traffic now (`starting`, `draining`), None while it serves."""


@dataclass(frozen=True)
class Front:
    """The client-facing listeners once bound: QUIC on UDP, TLS on TCP (None when off), one port number."""

    server: ProxyServer
    tcp: TcpListener | None
    port: int


@dataclass(frozen=True)
class Plane:
    """The balancer's parts, built by `bootstrap`; `listen` binds the client ports (after the fleet is known)."""

    engine: Engine
    router: Router
    verifier: Verifier
    reclaimer: Reclaimer
    workers: Workers
    metrics: MetricsEndpoint | None
    """None when `/metrics` is off (no `balancer_metrics_port`)."""
    listen: Callable[[], Awaitable[Front]]
    reload_certificate: Callable[[ProxyServer, TcpListener | None], bool]
    """Load the certificate and key again into the listeners (SIGHUP); False keeps the old pair."""
    l4: L4Plane | None = None
    """The kernel's map in `l4` mode (`l4.service.L4Service`); None in `l7`."""


class BalancerService(BusService):
    """quicfleet's balancer: serves HTTP/3 on UDP and follows the fleet over NATS.

    `build` is the bootstrap's: given the service's hooks it returns every part built (it needs
    the running loop, which the service's constructor runs on).
    """

    name = "balancer"
    description = "quicfleet HTTP/3 balancer"

    def __init__(self, settings: BalancerSettings, build: Callable[[Hooks], Plane], bus: Bus | None = None) -> None:
        super().__init__(settings, bus)
        self.settings: BalancerSettings = settings
        self.balancer_id = f"{settings.instance[:50]}-{secrets.token_hex(3)}"
        self.started_at = datetime.now(UTC)
        plane = build(Hooks(drained=self._drained, rejected_inputs=self._rejected_inputs, not_ready=self._not_ready))
        self.engine, self.router, self.verifier = plane.engine, plane.router, plane.verifier
        self.reclaimer, self.workers, self.metrics = plane.reclaimer, plane.workers, plane.metrics
        self._listen, self._reload, self.l4 = plane.listen, plane.reload_certificate, plane.l4
        self.draining = False
        """Set when the stop begins, before anything else of it: `/readyz` answers 503 from then on."""
        self._front: Front | None = None
        """Set once the ports are bound (like `bus`, read through properties that say when it is not)."""

    @property
    def front(self) -> Front:
        if self._front is None:
            raise RuntimeError("balancer has not bound its ports")
        return self._front

    @property
    def server(self) -> ProxyServer:
        return self.front.server

    @property
    def tcp(self) -> TcpListener | None:
        return self.front.tcp

    @property
    def port(self) -> int:
        return self._front.port if self._front is not None else self.settings.listen_port

    @property
    def metrics_port(self) -> int | None:
        """The port `/metrics` bound (None: off)."""
        return self.metrics.port if self.metrics is not None else None

    @property
    def address(self) -> str:
        return self.settings.advertise_address or f"{self.settings.listen_host}:{self.port}"

    async def on_start(self) -> None:
        if self.metrics is not None:
            await self.metrics.start()
        await self.bus.subscribe(self.subjects.vm_all, VmStateChanged, self._vm_event)
        await self._learn_fleet()
        self._front = await self._listen()
        self.workers.start(self.settings, self.port)
        self.spawn(self._report_loop(), "balancer-report")
        self.spawn(self._health_loop(), "balancer-health")
        self.spawn(self.reclaimer.run(self.router.loop), "balancer-reclaim")
        with contextlib.suppress(ValueError, RuntimeError):  # not the main thread: no signals (some tests)
            self.router.loop.add_signal_handler(signal.SIGHUP, self.reload_certificate)
        log.info("balancer.listening", balancer=self.balancer_id, mode="l7", address=self.address,
                 engine=self.engine.name, backends=len(self.router.table))

    def _not_ready(self) -> str | None:
        if self.draining:
            return "draining"
        return "starting" if self._front is None else None

    def reload_certificate(self) -> bool:
        """SIGHUP: new connections get the pair at the configured paths, open ones keep theirs; workers follow."""
        self.workers.signal(signal.SIGHUP)
        return self._front is not None and self._reload(self._front.server, self._front.tcp)

    async def stop(self) -> None:
        """Say `draining` first (an outside balancer's next `/readyz` check stops sending), then drain."""
        self.draining = True
        with contextlib.suppress(ValueError, RuntimeError):
            self.router.loop.remove_signal_handler(signal.SIGHUP)
        await super().stop()

    async def on_stop(self) -> None:
        """Drain: workers first, then TCP (stop accepting at once, so a sibling on the port takes new
        connections, and finish the open ones) and QUIC (GOAWAY, finish, close) side by side, each given
        half of `shutdown_grace_s` for its requests in flight."""
        await self.workers.stop()
        front = self._front  # kept after stop: `port` still names the port this balancer had
        if front is not None:
            within_s = self.settings.shutdown_grace_s / 2  # the other half: unregistering, workers, the bus
            tcp_closed = asyncio.create_task(front.tcp.close(within_s)) if front.tcp is not None else None
            await self._finish_in_flight(front.server, within_s)
            if tcp_closed is not None:
                await tcp_closed
            front.server.close()
        self.router.close()
        if self.metrics is not None:
            await self.metrics.close()

    async def _finish_in_flight(self, server: ProxyServer, within_s: float) -> None:
        """Hand new connections to siblings, GOAWAY every client, let in-flight requests finish, then close.

        With steering a sibling on the port takes the new connections; without one they are
        refused (the next version has not bound the port yet: clients retry).
        """
        server.limits.max_connections = 0
        server.drain()
        try:
            async with asyncio.timeout(within_s):
                await self.router.quiet()
                await server.all_closing()
        except TimeoutError:
            log.warning("balancer.stop_with_requests_in_flight", in_flight=self.router.in_flight())

    async def _learn_fleet(self) -> None:
        """Ask the provisioners which VMs exist, so a restarted balancer serves at once."""
        lists = await self.bus.gather(self.subjects.prov_list, ListVms(), VmList, self.settings.balancer_list_window_s)
        lists = [listing for listing in lists if serves(self.settings.balancer_hosts, listing.host)]
        added = apply_listing(self.router, lists, self.router.loop.time())
        self._verify_new()
        log.info("balancer.fleet_listed", hosts=len(lists), added=added)

    async def _vm_event(self, event: VmStateChanged, _msg: Msg) -> None:
        """Apply a provisioner's VM event; `draining` starts a drain with the event's deadline."""
        bind_message(subject=_msg.subject, vm=event.vm, state=event.state.value, request_id=event.request_id)
        if not serves(self.settings.balancer_hosts, event.host):
            return  # another host's VM (`balancer_hosts`): not a line per event of every other host
        outcome = apply_event(self.router, event, self.router.loop.time())
        self._verify_new()
        log.info("vm.event_handled", outcome=outcome, address=event.address)

    def _verify_new(self) -> None:
        """Check at once each VM that must still prove its identity (new, moved, or another UUID)."""
        due = self.verifier.due()
        if due:
            self.spawn(self.verifier.check(due), "balancer-verify")

    def _drained(self, over: DrainOver) -> None:
        """Publish one `BackendDrained` per drain (it carries the request id of the event that began it)."""
        request_id = next((r for r in over.request_ids if r is not None), None)
        message = BackendDrained(vm=over.vm, balancer=self.balancer_id, timed_out=over.timed_out, request_id=request_id)
        self.spawn(self._publish_drained(message), "balancer-drained")

    def _rejected_inputs(self) -> Mapping[str, int]:
        return self._bus.throttle.totals if self._bus is not None else {}

    async def _publish_drained(self, message: BackendDrained) -> None:
        await self.bus.publish(self.subjects.balancer_drained, message)
        log.info("drain.finished", vm=message.vm, timed_out=message.timed_out, request_id=message.request_id)

    async def _report_loop(self) -> None:
        interval = self.settings.balancer_report_interval_s
        while True:
            await asyncio.sleep(interval)
            await self.bus.publish(self.subjects.balancer_report, self.report())

    def report(self) -> BalancerReported:
        """This balancer's load report right now."""
        front = self._front
        connections = front.server.connections if front is not None else 0
        connections += front.tcp.connections if front is not None and front.tcp is not None else 0  # browsers too
        return build_report(
            self.balancer_id, self.address, self.started_at, self.settings.balancer_report_interval_s,
            connections, self.router.table.backends.values(), self.router.loop.time(),
        )

    async def _health_loop(self) -> None:
        path = self.settings.health_path.encode()
        while True:
            await asyncio.sleep(self.settings.health_interval_s)
            await check_all(self.router, path, self.settings.health_timeout_s)

