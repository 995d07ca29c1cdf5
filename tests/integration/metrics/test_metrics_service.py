"""The metrics service on a real nats-server fed synthetic balancer reports: fleet.load and HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable

import aiohttp
import pytest
from structlog.testing import capture_logs

from ops.natsserver import NatsServer
from services.metrics.bootstrap import bootstrap
from services.metrics.service import MetricsService
from services.metrics.settings import MetricsSettings
from shared.bus import Bus, decode
from shared.contract.base import utcnow
from shared.contract.events import ScalingDecided, VmState, VmStateChanged
from shared.contract.load import FleetLoaded
from shared.contract.status import DesiredState
from tests.integration.metrics.helpers import collect, publish_reports, scrape
from tests.support import wait_until
from tests.unit.metrics.builders import backend, report


async def test_fleet_load_reflects_reports_within_two_snapshots(bus: Bus, metrics: MetricsService) -> None:
    """A report from a fresh balancer run shows up in one of the next two `fleet.load` snapshots."""
    snapshots = await collect(bus, bus.subjects.load)
    await snapshots.wait_for(lambda _m: True, timeout=15)
    base = utcnow()
    await publish_reports(bus, [report("b1", 1, [backend("vm-a", 30, outstanding=3)], base=base)])
    seen_before = len(snapshots.messages)
    msg = await snapshots.wait_for(lambda m: decode(FleetLoaded, m.data).rps > 0, timeout=15)
    assert snapshots.messages.index(msg) < seen_before + 2
    load = decode(FleetLoaded, msg.data)
    assert load.balancers == 1 and load.rps == pytest.approx(30.0)
    assert [(v.vm, v.outstanding) for v in load.vms] == [("vm-a", 3.0)]


async def test_metrics_counters_add_up_to_what_balancers_reported(
    bus: Bus, metrics: MetricsService, http: aiohttp.ClientSession
) -> None:
    """Per-VM counters on /metrics equal the sum over balancers of their latest cumulative counts."""
    base = utcnow()
    reports = [
        report(balancer, t, [backend("vm-a", share * t, errors=t), backend("vm-b", t)], base=base)
        for t in range(1, 6)
        for balancer, share in (("b1", 7), ("b2", 3))
    ]
    sent = {"vm-a": 5 * 7 + 5 * 3, "vm-b": 5 + 5}
    await publish_reports(bus, reports)

    async def counters() -> dict[str, float] | None:
        got = (await scrape(http, metrics)).get("quicfleet_backend_requests_total", {})
        return got if got == sent else None

    await wait_until(counters, timeout=15, what=f"requests_total == {sent}")
    parsed = await scrape(http, metrics)
    assert parsed["quicfleet_backend_errors_total"] == {"vm-a": 10, "vm-b": 0}
    assert parsed["quicfleet_request_duration_seconds_count"] == sent


async def test_fleet_shape_reaches_metrics_and_dashboard(
    bus: Bus, metrics: MetricsService, http: aiohttp.ClientSession
) -> None:
    """VM events, the desired state and scaling decisions show on /metrics and in the dashboard JSON."""
    s = bus.subjects
    await bus.publish(s.vm(VmState.READY), VmStateChanged(vm="vm-a", state=VmState.READY))
    await bus.publish(s.vm(VmState.BOOTING), VmStateChanged(vm="vm-b", state=VmState.BOOTING))
    await bus.publish(s.scaler_state, DesiredState(desired=3, epoch=1))
    await bus.publish(s.scaler_decision, ScalingDecided(current=2, desired=3, reason="outstanding above target"))

    async def shaped() -> bool:
        parsed = await scrape(http, metrics)
        vms = parsed.get("quicfleet_vms", {})
        return vms.get("ready") == 1 and vms.get("booting") == 1 and "quicfleet_desired_vms" in parsed

    await wait_until(shaped, timeout=15, what="VM states and desired size on /metrics")
    assert metrics.http is not None
    async with http.get(f"{metrics.http.url}/api/dashboard") as response:
        data = await response.json()
    assert data["desired"] == 3 and data["decisions"][0]["reason"] == "outstanding above target"
    async with http.get(f"{metrics.http.url}/healthz") as response:
        assert response.status == 200 and (await response.json())["ok"] is True


async def test_garbage_reports_are_logged_and_ignored(
    bus: Bus, metrics: MetricsService, http: aiohttp.ClientSession
) -> None:
    """Malformed, absurd or stale reports are logged and dropped; the service keeps counting good ones."""
    base = utcnow()
    garbage = [b"\xff\x00", b"[]", b'{"balancer": "b1", "backends": "lots"}', b"{" * 300_000]
    hostile = report("b1", 1, [backend("vm-a", 5)], base=base).model_dump(mode="json")
    hostile["backends"][0]["requests"] = 2**70
    good = report("b1", 2, [backend("vm-a", 5)], base=base)
    older = report("b1", 1, [backend("vm-a", 3)], base=base)
    with capture_logs() as logs:
        await publish_reports(bus, [*garbage, _json(hostile), good, older])

        def out_of_order_logged() -> bool:
            return any(e.get("outcome") == "out_of_order" and e["log_level"] == "warning" for e in logs)

        await wait_until(out_of_order_logged, timeout=15, what="the older report logged as out of order")
    bad = [entry for entry in logs if entry["event"] == "bus.bad_event"]
    assert len(bad) == len(garbage) + 1, logs
    assert metrics.state.aggregator.totals()["vm-a"].requests == 5


def _json(data: object) -> bytes:
    return json.dumps(data).encode()


async def test_silent_balancer_is_dropped_from_fleet_load(bus: Bus, metrics: MetricsService) -> None:
    """A balancer that stops reporting leaves `fleet.load` after about three of its intervals."""
    snapshots = await collect(bus, bus.subjects.load)
    base = utcnow()

    async def report_every_300_ms() -> None:
        for t in range(1, 1000):
            quick = report("b1", t * 0.3, [backend("vm-a", t, outstanding=2)], base=base)
            await publish_reports(bus, [quick.model_copy(update={"interval_s": 0.3})])
            await asyncio.sleep(0.3)

    reporting = asyncio.create_task(report_every_300_ms())
    try:
        await snapshots.wait_for(lambda m: decode(FleetLoaded, m.data).balancers == 1, timeout=15)
    finally:
        reporting.cancel()
    seen = len(snapshots.messages)
    await snapshots.wait_for(
        lambda m: snapshots.messages.index(m) >= seen and decode(FleetLoaded, m.data).balancers == 0, timeout=15
    )


async def test_two_replicas_publish_agreeing_snapshots(
    bus: Bus, settings_env: dict[str, str], metrics: MetricsService
) -> None:
    """A second metrics replica publishes its own snapshot, agreeing with the first but for its source."""
    async with bootstrap(MetricsSettings(metrics_port=0, instance="replica-2")) as second:
        base = utcnow()
        await publish_reports(bus, [report("b1", 2, [backend("vm-a", 40)], base=base)])
        await wait_until(
            lambda: all("vm-a" in m.state.aggregator.totals() for m in (metrics, second)), timeout=15, what="both"
        )
        now = asyncio.get_running_loop().time()
        first_snap, _ = metrics.state.tick(now, base)
        second_snap, _ = second.state.tick(now, base)
    assert first_snap.source != second_snap.source
    assert first_snap.model_copy(update={"source": None}) == second_snap.model_copy(update={"source": None})
    assert first_snap.rps == pytest.approx(20.0)


async def test_healthz_follows_the_nats_connection(
    nats_server: NatsServer, metrics: MetricsService, http: aiohttp.ClientSession
) -> None:
    """/healthz answers 503 while NATS is down and 200 again once the service has reconnected."""
    assert metrics.http is not None
    url = f"{metrics.http.url}/healthz"

    async def status() -> int:
        async with http.get(url) as response:
            return response.status

    await asyncio.to_thread(nats_server.stop)
    await wait_until(lambda: _equals(status(), 503), timeout=20, what="/healthz 503 without NATS")
    await asyncio.to_thread(nats_server.start)
    await wait_until(lambda: _equals(status(), 200), timeout=30, what="/healthz 200 after reconnecting")


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def test_two_replicas_share_one_port_and_sign_their_snapshots_apart(
    bus: Bus, settings_env: dict[str, str], http: aiohttp.ClientSession
) -> None:
    """Two metrics replicas bind the same HTTP port (SO_REUSEPORT), both serve it, and their snapshots name each."""
    snapshots = await collect(bus, bus.subjects.load)
    async with bootstrap(MetricsSettings(metrics_port=0, instance="host1")) as one:
        assert one.http is not None
        shared = MetricsSettings(metrics_port=one.http.port, instance="host1")
        async with bootstrap(shared) as two:
            assert two.http is not None and two.http.port == one.http.port
            async with http.get(f"{two.http.url}/healthz") as response:
                assert response.status == 200
            sources = {one.source, two.source}
            await snapshots.wait_for(lambda _m: {decode(FleetLoaded, m.data).source for m in snapshots.messages}
                                     >= sources, timeout=15)
    assert len(sources) == 2 and all(s.startswith("host1-") for s in sources)


async def test_without_reuse_port_a_second_replica_cannot_bind(settings_env: dict[str, str]) -> None:
    """With `metrics_reuse_port` off, a second replica on the same port fails to start (address in use)."""
    async with bootstrap(MetricsSettings(metrics_port=0, metrics_reuse_port=False)) as one:
        assert one.http is not None
        with pytest.raises(OSError):
            async with bootstrap(MetricsSettings(metrics_port=one.http.port, metrics_reuse_port=False)):
                pass
