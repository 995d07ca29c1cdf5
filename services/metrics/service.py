"""The metrics service: NATS in (reports, VM events, decisions), `fleet.load` and HTTP out.

Thin glue around `MetricsState`: each handler feeds one message to the core and writes one log
line; a ticker takes a snapshot every `metrics_interval_s` and publishes it; another asks every
service's `$SRV.STATS` for its rejected-input counts every `REJECTIONS_PERIOD_S` (`rejections`).

`bootstrap` builds the parts (the core state, the signature of this replica's snapshots, the
HTTP server); the service connects, subscribes and runs the loops.

Several replicas may run side by side: each sees the same reports and publishes its own
`fleet.load`. The snapshot holds nothing replica-specific, so the scaler may take any of them
(they agree up to the moment each was taken); it just sees more than one per interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from nats.aio.msg import Msg

from services.metrics.http import HttpServer
from services.metrics.rejections import gather
from services.metrics.settings import MetricsSettings
from services.metrics.state import MetricsState
from services.metrics.window import Outcome
from shared.bus import Bus
from shared.contract.base import utcnow
from shared.contract.events import ScalingDecided, VmStateChanged
from shared.contract.forecast import ForecastMade
from shared.contract.load import BalancerReported
from shared.contract.status import DesiredState
from shared.logging import bind_message
from shared.runtime import BusService
from shared.throttle import rejected_inputs

log = structlog.get_logger("services.metrics")

IGNORED = frozenset({Outcome.OUT_OF_ORDER, Outcome.REFUSED})
"""Report outcomes worth a warning: the report changed nothing."""
REJECTIONS_PERIOD_S = 5.0
"""How often rejected-input counts are gathered from `$SRV.STATS` (a scrape shows them this late at most)."""
STATS_WINDOW_S = 0.5


class MetricsService(BusService):
    """quicfleet's metrics: one view of the fleet's load for the scaler, Prometheus and people."""

    name = "metrics"
    description = "quicfleet metrics: fleet load snapshots, /metrics and the dashboard"

    def __init__(
        self, settings: MetricsSettings, state: MetricsState, source: str,
        http: Callable[[Callable[[], bool], Callable[[], str | None]], HttpServer], bus: Bus | None = None,
    ) -> None:
        """`http` makes the HTTP server given what its `/healthz` asks (whether the bus is connected) and what its
        `/readyz` asks (why not ready: `draining` from the start of the stop, `disconnected`)."""
        super().__init__(settings, bus)
        self.settings: MetricsSettings = settings
        self.state = state
        self.source = source
        """Signs each snapshot: replicas on one host share the instance name (host networking)."""
        self.draining = False
        self.http = http(self._connected, self._not_ready)

    def _connected(self) -> bool:
        return self._bus is not None and self._bus.connected

    def _not_ready(self) -> str | None:
        if self.draining:
            return "draining"
        return None if self._connected() else "disconnected"

    async def stop(self) -> None:
        """`/readyz` says `draining` from here on, while the service unregisters and its HTTP server closes."""
        self.draining = True
        await super().stop()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def on_start(self) -> None:
        s = self.subjects
        await self.bus.subscribe(s.balancer_report, BalancerReported, self.on_report)
        await self.bus.subscribe(s.vm_all, VmStateChanged, self.on_vm)
        await self.bus.subscribe(s.scaler_decision, ScalingDecided, self.on_decision)
        await self.bus.subscribe(s.scaler_state, DesiredState, self.on_desired)
        await self.bus.subscribe(s.scaler_forecast, ForecastMade, self.on_forecast)
        await self._subscriptions_registered()
        await self.http.start()
        self.spawn(self._publish_loop(), "metrics.publish")
        self.spawn(self._rejections_loop(), "metrics.rejections")

    async def _subscriptions_registered(self) -> None:
        """Return once the server has our subscriptions, so nothing published after start is missed.

        nats-py's `flush()` is no barrier here: it writes its PING straight to the socket, ahead of
        SUBs still queued for the flusher task. A message to ourselves queues behind them instead.
        """
        nc = self.bus.nc
        inbox = nc.new_inbox()
        probe = await nc.subscribe(inbox, max_msgs=1)
        await nc.publish(inbox, b"")
        await probe.next_msg(timeout=10)

    async def on_stop(self) -> None:
        await self.http.stop()

    async def on_forecast(self, event: ForecastMade, _msg: Msg) -> None:
        self.state.forecast = event

    async def on_report(self, report: BalancerReported, _msg: Msg) -> None:
        bind_message(subject=self.subjects.balancer_report, balancer=report.balancer)
        outcome = self.state.aggregator.observe(report, self._now())
        level = log.warning if outcome in IGNORED else log.debug
        level("report.observed", outcome=outcome.value, backends=len(report.backends))

    async def on_vm(self, event: VmStateChanged, msg: Msg) -> None:
        bind_message(subject=msg.subject, vm=event.vm, state=event.state.value)
        applied = self.state.fleet.vm_changed(event, self._now())
        log.info("vm.observed", applied=applied)

    async def on_decision(self, decision: ScalingDecided, _msg: Msg) -> None:
        bind_message(subject=self.subjects.scaler_decision, leader=decision.leader)
        self.state.fleet.decided(decision)
        log.info("decision.observed", current=decision.current, desired=decision.desired)

    async def on_desired(self, state: DesiredState, _msg: Msg) -> None:
        bind_message(subject=self.subjects.scaler_state, leader=state.leader, epoch=state.epoch)
        applied = self.state.fleet.desired_changed(state)
        log.debug("desired.observed", desired=state.desired, applied=applied)

    async def _publish_loop(self) -> None:
        """Publish a snapshot every interval, on a fixed schedule (a slow tick does not shift later ones)."""
        interval = self.settings.metrics_interval_s
        next_at = self._now() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - self._now()))
            next_at = max(next_at + interval, self._now())
            await self.publish_snapshot()

    async def _rejections_loop(self) -> None:
        while True:
            await self.gather_rejections()
            await asyncio.sleep(REJECTIONS_PERIOD_S)

    async def gather_rejections(self) -> int:
        """Take this service's own counts and every service's from `$SRV.STATS`; returns how many answered."""
        rejections, now = self.state.rejections, self._now()
        rejections.observe(self.name, self.source, rejected_inputs(self.bus.throttle.totals), now)
        found = await gather(self.bus.nc, STATS_WINDOW_S) if self.bus.connected else []
        for service, instance, counts in found:
            rejections.observe(service, instance, counts, now)
        rejections.expire(now)
        log.debug("rejections.gathered", services=len(found))
        return len(found)

    async def publish_snapshot(self) -> None:
        """Take one snapshot and publish it on `fleet.load`; one log line, info when something went stale."""
        bind_message(subject=self.subjects.load)
        snapshot, expired = self.state.tick(self._now(), utcnow())
        sent = await self.bus.publish(self.subjects.load, snapshot)
        level = log.info if expired.balancers or expired.vms else log.debug
        level(
            "load.published", sent=sent, rps=round(snapshot.rps, 3), balancers=snapshot.balancers,
            vms=len(snapshot.vms), dropped_balancers=expired.balancers or None, forgotten_vms=expired.vms or None,
        )
