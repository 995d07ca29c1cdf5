"""The forecast on a real nats-server: watch mode publishes and changes nothing; the history outlives a leader."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

from nats.aio.msg import Msg

from services.scaler.bootstrap import bootstrap
from services.scaler.core.history import DAY_MINUTES, LoadHistory, close, minute_of
from services.scaler.foresight import HISTORY_KEY, load_history
from services.scaler.service import ScalerService
from services.scaler.settings import ScalerSettings
from shared.bus import Bus
from shared.contract.commands import PolicyPatch, ScaleFleet
from shared.contract.forecast import ForecastMade
from shared.contract.load import FleetLoaded, VmLoad
from shared.contract.policy import ScalingPolicy
from shared.contract.status import DesiredState
from tests.integration.scaler.fakes import FakeProvisioner
from tests.support import Collector, wait_until

TTL = 2.0


@asynccontextmanager
async def scaler(name: str) -> AsyncIterator[ScalerService]:
    async with bootstrap(ScalerSettings(scaler_id=name, lease_ttl_s=TTL)) as service:
        await wait_until(lambda: service._lease is not None and service.lease.holder is not None, 20, what="a leader")
        yield service


def two_days(value: float) -> LoadHistory:
    """Two days of `value` in flight per minute, up to the minute before now: a forecast of `value` for now."""
    now = minute_of(time.time())
    history = LoadHistory(signal="outstanding")
    for minute in range(now - 2 * DAY_MINUTES, now):
        history = close(history, minute, value, value)
    return history


async def seed(service: ScalerService, history: LoadHistory) -> None:
    async with service._lock:
        service.fleet = replace(service.fleet, history=history)


async def test_watch_mode_publishes_the_forecast_and_changes_nothing(bus: Bus, settings_env: dict[str, str]) -> None:
    """With history forecasting 100 in flight (14 VMs at target 8) and 2 VMs at 7 each (inside the band), the
    leader publishes that it would scale to 10 (max_replicas), and the fleet stays at 2 with no create."""
    forecasts = Collector()

    async def on_forecast(event: ForecastMade, _msg: Msg) -> None:
        await forecasts(event)

    await bus.subscribe(bus.subjects.scaler_forecast, ForecastMade, on_forecast)
    async with FakeProvisioner(bus) as prov, scaler("s1") as one:
        await wait_until(lambda: one.leading, 20, what="leadership")
        await bus.request(bus.subjects.cmd_policy, PolicyPatch(warmup_s=0, manual_hold_s=0), ScalingPolicy)
        await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=2), DesiredState)
        await wait_until(lambda: len(prov.vms) == 2 and len(one.fleet.vms) == 2, 20, what="two VMs")
        await seed(one, two_days(100.0))
        views = [VmLoad(vm=name, outstanding=7.0) for name in prov.vms]
        await bus.publish(bus.subjects.load, FleetLoaded(window_s=1, outstanding=14.0, vms=views))
        event = await forecasts.wait_for(lambda e: e.would is not None, 20)
        creates = len(prov.creates)
    assert event.mode == "watch" and event.working and event.would == 10 and event.desired == 2
    assert event.points and event.points[0].earlier[:2] == [100.0, 100.0]
    assert one.store.current.desired == 2 and creates == 2


async def test_the_history_survives_a_leader_change(bus: Bus, settings_env: dict[str, str]) -> None:
    """A leader's two days of history are in KV (bounded) when it stops, and the next leader, started after it,
    forecasts from them."""
    history = two_days(50.0)
    async with scaler("s1") as one:
        await wait_until(lambda: one.leading, 20, what="leadership")
        await seed(one, history)
    async with scaler("s2") as two:
        await wait_until(lambda: two.leading and two.fleet.epoch >= 2, 20, what="the second leader's term")
        stored = await load_history(two._foresight.kv) if two._foresight else LoadHistory()
        entry = await two._foresight.kv.get(HISTORY_KEY) if two._foresight else None
    assert stored.means == history.means and stored.first == history.first
    assert two.fleet.history.mean(history.first + 10) == 50.0 and two.fleet.history.seen_minutes() >= 2 * DAY_MINUTES
    assert entry is not None and len(entry.value or b"") < 150_000
