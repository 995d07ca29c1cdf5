"""The balancer as a process: SO_REUSEPORT workers each report, and SIGTERM stops them all with exit 0."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from shared.bus import Bus
from shared.contract.load import BalancerReported
from tests.support import Collector

ROOT = Path(__file__).resolve().parents[3]


async def test_two_workers_share_the_port_and_exit_zero(
    bus: Bus, settings_env: dict[str, str], tmp_path: Path
) -> None:
    """With workers=2 two balancers report the same UDP address, and SIGTERM ends both with exit code 0."""
    reports = Collector()

    async def on_report(event: BalancerReported, _msg: object) -> None:
        await reports(event)

    await bus.subscribe(bus.subjects.balancer_report, BalancerReported, on_report)
    env = os.environ | settings_env | {
        "QUICFLEET_BALANCER_WORKERS": "2", "QUICFLEET_LISTEN_PORT": "0", "QUICFLEET_BALANCER_LIST_WINDOW_S": "0.1",
        "QUICFLEET_BALANCER_REPORT_INTERVAL_S": "0.3", "QUICFLEET_BALANCER_STATE_DIR": str(tmp_path),
    }
    proc = subprocess.Popen([sys.executable, "-m", "services.balancer"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        first = await reports.wait_for(lambda r: True, timeout=30)
        second = await reports.wait_for(lambda r: r.balancer != first.balancer, timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    assert first.address == second.address and first.address is not None
    assert not first.address.endswith(":0")
    assert code == 0, proc.stdout.read()[-2000:] if proc.stdout else ""
