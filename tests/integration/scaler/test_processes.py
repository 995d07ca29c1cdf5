"""Two scaler processes: SIGKILL the leader and the other one leads within a lease period."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from shared.bus import Bus
from shared.contract.commands import GetStatus
from shared.contract.status import FleetStatus
from shared.errors import BusError
from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[3]
TTL = 2.0


def _start(name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    extra = {"QUICFLEET_SCALER_ID": name, "QUICFLEET_LEASE_TTL_S": str(TTL), "QUICFLEET_INSTANCE": name}
    return subprocess.Popen(
        [sys.executable, "-m", "services.scaler"], cwd=ROOT, env=os.environ | env | extra,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


async def _status(bus: Bus) -> FleetStatus | None:
    try:
        return await bus.request(bus.subjects.cmd_status, GetStatus(), FleetStatus, timeout=1)
    except BusError:
        return None


async def test_sigkilled_leader_is_replaced_in_a_new_epoch(bus: Bus, settings_env: dict[str, str]) -> None:
    """After SIGKILL of the leading process, the surviving one reports itself leader in epoch 2 within ~ttl."""
    procs = {name: _start(name, settings_env) for name in ("a", "b")}
    try:
        async def led() -> FleetStatus | None:
            status = await _status(bus)
            return status if status and status.leader in procs else None

        first = await wait_until(led, 30, what="a leader in status")
        await wait_until(lambda: all(p.poll() is None for p in procs.values()), 5, what="both running")
        procs[first.leader].send_signal(signal.SIGKILL)
        await asyncio.to_thread(procs[first.leader].wait, 10)
        killed = time.monotonic()
        survivor = "b" if first.leader == "a" else "a"

        async def taken() -> bool:
            status = await _status(bus)
            return bool(status and status.leader == survivor and status.epoch == first.epoch + 1)

        await wait_until(taken, 10 * TTL, interval=0.05, what="takeover by the survivor")
        took = time.monotonic() - killed
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = [await asyncio.to_thread(proc.wait, 20) for proc in procs.values()]
    assert took <= TTL * 1.5 + 1.0, took
    assert sorted(codes) == [-signal.SIGKILL, 0]
