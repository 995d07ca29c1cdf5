"""The dashboard in Debian's headless Chromium against a running metrics service with live reports."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.metrics.bootstrap import bootstrap
from services.metrics.service import MetricsService
from services.metrics.settings import MetricsSettings
from shared.bus import Bus
from shared.contract.base import utcnow
from shared.contract.events import ScalingDecided, VmState, VmStateChanged
from shared.contract.status import DesiredState
from tests.support import wait_until
from tests.support.chromium import chromium_binary
from tests.unit.metrics.builders import backend, report

pytestmark = pytest.mark.browser

TICK_S = 0.25
VMS = ("vm-1", "vm-2", "vm-3")
CHARTS = ("fleet", "rps", "latency", "errors")

async def run_chromium(binary: str, profile: Path, url: str, *mode: str) -> bytes:
    """Run headless Chromium once on `url` (dump the DOM or take a screenshot); return its stdout."""
    args = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={profile}",
        "--window-size=1280,900", "--virtual-time-budget=5000", *mode, url,
    ]
    pipe, devnull = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
    proc = await asyncio.create_subprocess_exec(*args, stdout=pipe, stderr=devnull)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=90)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, f"chromium exited {proc.returncode}"
    return out


async def feed(bus: Bus) -> None:
    """A fleet in motion: two balancers reporting a wavy load over three VMs every tick."""
    s = bus.subjects
    for vm in VMS:
        await bus.publish(s.vm(VmState.READY), VmStateChanged(vm=vm, state=VmState.READY))
    await bus.publish(s.vm(VmState.BOOTING), VmStateChanged(vm="vm-4", state=VmState.BOOTING))
    await bus.publish(s.scaler_state, DesiredState(desired=4, epoch=1))
    decision = ScalingDecided(current=3, desired=4, reason="outstanding 11.2 above target 8", signal="outstanding")
    await bus.publish(s.scaler_decision, decision)
    base, totals, tick = utcnow(), dict.fromkeys(VMS, 0), 0
    while True:
        tick += 1
        for n, vm in enumerate(VMS):
            totals[vm] += 5 + round(4 * math.sin(tick / 8 + n))
        for balancer in ("b1", "b2"):
            loads = [backend(vm, totals[vm], errors=totals[vm] // 50, outstanding=2 + n) for n, vm in enumerate(VMS)]
            sent = report(balancer, tick * TICK_S, loads, base=base).model_copy(update={"interval_s": TICK_S})
            await bus.publish(s.balancer_report, sent)
        await asyncio.sleep(TICK_S)  # the synthetic balancers' report cadence, not a wait for an event


def loaded(service: MetricsService) -> bool:
    """The service has a few history points and its latest snapshot shows traffic."""
    latest = service.state.latest
    return len(service.state.fleet.history) >= 8 and latest is not None and latest.rps > 0


@pytest.fixture
async def live_metrics(bus: Bus, settings_env: dict[str, str]) -> AsyncIterator[MetricsService]:
    """A metrics service snapshotting every 0.25 s, fed until the dashboard has a few points of history."""
    settings = MetricsSettings(metrics_port=0, metrics_interval_s=TICK_S, metrics_window_s=2)
    async with bootstrap(settings) as service:
        feeder = asyncio.create_task(feed(bus))
        try:
            await wait_until(lambda: loaded(service), timeout=30, what="dashboard history with load")
            yield service
        finally:
            feeder.cancel()


async def test_dashboard_charts_hold_live_data(live_metrics: MetricsService, tmp_path: Path) -> None:
    """Headless Chromium renders the page with all four charts holding points, the tiles and a decision."""
    binary = chromium_binary()
    assert live_metrics.http is not None
    url = f"{live_metrics.http.url}/"
    dom = (await run_chromium(binary, tmp_path / "profile-dom", url, "--dump-dom")).decode()
    for chart in CHARTS:
        points = re.search(rf'id="chart-{chart}" data-points="(\d+)"', dom)
        assert points is not None and int(points.group(1)) >= 8, f"chart {chart} holds no data"
    assert dom.count("<canvas") >= len(CHARTS)
    updates = re.search(r'data-updates="(\d+)"', dom)
    assert updates is not None and int(updates.group(1)) >= 2, "the page polled once only (later polls send `since`)"
    assert re.search(r'id="tile-rps">\d+\.\d<', dom), "requests/s tile not filled"
    assert 'id="tile-vms">3 / 4<' in dom
    assert 'class="status live"' in dom
    assert "outstanding 11.2 above target 8" in dom

    shot = tmp_path / "dashboard.png"
    await run_chromium(binary, tmp_path / "profile-shot", url, f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
