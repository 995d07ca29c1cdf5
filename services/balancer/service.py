"""The balancer service: HTTP/3 data plane plus its NATS side (membership, drains, reports)."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime

import structlog
from nats.aio.msg import Msg

from services.balancer.core.drain import DrainOver
from services.balancer.core.reporting import build_report
from services.balancer.core.trim import TrimPolicy
from services.balancer.process.reclaim import Reclaimer, glibc_trim
from services.balancer.process.workers import Workers
from services.balancer.proxy.membership import apply_event, apply_listing
from services.balancer.proxy.router import Router
from services.balancer.quic import load_engine
from services.balancer.quic.server import ProxyServer, start_server
from services.balancer.settings import BalancerSettings
from services.balancer.steering.cid import Layout
from services.balancer.tcp.listener import TcpListener, bind_tcp_first, start_tcp_listener
from services.balancer.upstream.checks import Verifier, check_all
from services.balancer.wiring import make_limits, make_router, make_server_config
from shared.bus import Bus
from shared.contract.draining import BackendDrained, DrainBackend
from shared.contract.events import VmStateChanged
from shared.contract.load import BalancerReported
from shared.contract.provisioning import ListVms, VmList
from shared.logging import bind_message
from shared.runtime import BusService

log = structlog.get_logger("balancer.service")


class BalancerService(BusService):
    """quicfleet's balancer: serves HTTP/3 on UDP and follows the fleet over NATS."""

    name = "balancer"
    description = "quicfleet HTTP/3 balancer"

    def __init__(self, settings: BalancerSettings, bus: Bus | None = None) -> None:
        super().__init__(settings, bus)
        self.settings: BalancerSettings = settings
        self.balancer_id = f"{settings.instance[:50]}-{secrets.token_hex(3)}"
        self.started_at = datetime.now(UTC)
        self.router: Router | None = None
        self.verifier: Verifier | None = None
        self.server: ProxyServer | None = None
        self.tcp: TcpListener | None = None
        self.metrics_port: int | None = None
        self.reclaimer: Reclaimer | None = None
        self.port = settings.listen_port
        self.workers = Workers()
        self.engine = load_engine(settings.quic_engine)

    @property
    def address(self) -> str:
        return self.settings.advertise_address or f"{self.settings.listen_host}:{self.port}"

    async def on_start(self) -> None:
        self.router = make_router(self.settings, self.engine, self._drained)
        self.router.telemetry.rejected_inputs = lambda: self.bus.throttle.totals
        self.verifier = Verifier(self.router, self.settings.health_path.encode(), self.settings.health_timeout_s)
        self.metrics_port = await self.router.telemetry.expose(self.settings)  # None: /metrics off
        await self.bus.subscribe(self.subjects.vm_all, VmStateChanged, self._vm_event)
        await self.bus.subscribe(self.subjects.balancer_drain, DrainBackend, self._drain_request)
        await self._learn_fleet()
        config = make_server_config(self.settings, self.engine)
        host, port, limits = self.settings.listen_host, self.settings.listen_port, make_limits(self.settings)
        tcp_sock = bind_tcp_first(host, port) if self.settings.listen_tcp else None  # browsers: TLS on TCP too
        port = tcp_sock.getsockname()[1] if tcp_sock is not None else port  # port 0: one number for both
        steering = self._steering_layout()
        self.server, self.port = await start_server(self.engine, host, port, config, self.router, limits, steering)
        self.tcp = await start_tcp_listener(self.settings, tcp_sock, self.router, limits) if tcp_sock else None
        self.workers.start(self.settings, self.port)
        self.spawn(self._report_loop(), "balancer-report")
        self.spawn(self._health_loop(), "balancer-health")
        policy = TrimPolicy(min_interval_s=self.settings.balancer_memory_trim_s)
        self.reclaimer = Reclaimer(limits.per_ip, policy, self.router.telemetry, glibc_trim())
        self.spawn(self.reclaimer.run(self.router.loop), "balancer-reclaim")
        log.info("balancer.listening", balancer=self.balancer_id, address=self.address, engine=self.engine.name,
                 backends=len(self.router.table))

    async def on_stop(self) -> None:
        """Drain: workers first, then TCP (stop accepting at once, so a sibling on the port takes new
        connections, and finish the open ones) and QUIC (GOAWAY, finish, close) side by side."""
        await self.workers.stop()
        tcp_closed = asyncio.create_task(self.tcp.close()) if self.tcp is not None else None
        await self._finish_in_flight(self.settings.shutdown_grace_s / 2)
        if tcp_closed is not None:
            await tcp_closed
            self.tcp = None
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.router is not None:
            self.router.close()
            await self.router.telemetry.close()

    async def _finish_in_flight(self, within_s: float) -> None:
        """Hand new connections to siblings, GOAWAY every client, let in-flight requests finish, then close.

        With steering a sibling on the port takes the new connections; without one they are
        refused (the next version has not bound the port yet: clients retry).
        """
        if self.server is None or self.router is None:
            return
        self.server.limits.max_connections = 0
        self.server.drain()
        try:
            async with asyncio.timeout(within_s):
                await self.router.quiet()
                await self.server.all_closing()
        except TimeoutError:
            log.warning("balancer.stop_with_requests_in_flight", in_flight=self.router.in_flight())

    def _steering_layout(self) -> Layout | None:
        settings = self.settings
        return Layout(settings.quic_lb_config_id, settings.quic_lb_node) if settings.quic_steering else None

    async def _learn_fleet(self) -> None:
        """Ask the provisioners which VMs exist, so a restarted balancer serves at once."""
        assert self.router is not None
        lists = await self.bus.gather(self.subjects.prov_list, ListVms(), VmList, self.settings.balancer_list_window_s)
        added = apply_listing(self.router, lists, self.router.loop.time())
        self._verify_new()
        log.info("balancer.fleet_listed", hosts=len(lists), added=added)

    async def _vm_event(self, event: VmStateChanged, _msg: Msg) -> None:
        assert self.router is not None
        bind_message(subject=_msg.subject, vm=event.vm, state=event.state.value, request_id=event.request_id)
        outcome = apply_event(self.router, event, self.router.loop.time())
        self._verify_new()
        log.info("vm.event_handled", outcome=outcome, address=event.address)

    def _verify_new(self) -> None:
        """Check at once each VM that must still prove its identity (new, moved, or another UUID)."""
        assert self.verifier is not None
        due = self.verifier.due()
        if due:
            self.spawn(self.verifier.check(due), "balancer-verify")

    async def _drain_request(self, command: DrainBackend, _msg: Msg) -> None:
        assert self.router is not None
        bind_message(subject=_msg.subject, vm=command.vm, request_id=command.request_id)
        known = self.router.table.get(command.vm) is not None
        self.router.drain(command.vm, command.deadline_s, command.request_id)
        log.info("drain.started", known=known, deadline_s=command.deadline_s)

    def _drained(self, over: DrainOver) -> None:
        """Publish one `BackendDrained` per request that asked (a drain event counts as one)."""
        for request_id in dict.fromkeys(over.request_ids):
            message = BackendDrained(
                vm=over.vm, balancer=self.balancer_id, timed_out=over.timed_out, request_id=request_id
            )
            self.spawn(self._publish_drained(message), "balancer-drained")

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
        assert self.router is not None
        connections = self.server.connections if self.server is not None else 0
        connections += self.tcp.connections if self.tcp is not None else 0  # browsers before they move to HTTP/3
        return build_report(
            self.balancer_id, self.address, self.started_at, self.settings.balancer_report_interval_s,
            connections, self.router.table.backends.values(), self.router.loop.time(),
        )

    async def _health_loop(self) -> None:
        assert self.router is not None
        path = self.settings.health_path.encode()
        while True:
            await asyncio.sleep(self.settings.health_interval_s)
            await check_all(self.router, path, self.settings.health_timeout_s)

