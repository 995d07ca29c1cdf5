"""Every service stopped while NATS is away: SIGTERM still drains what it can and exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from ops.natsserver import NatsServer
from tests.support import wait_until

SERVICES = ("balancer", "metrics", "scaler", "provisioner")
ROOT = Path(__file__).resolve().parents[2]


def _start(service: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", f"services.{service}"], cwd=ROOT, env=os.environ | env,
            stdout=out, stderr=subprocess.STDOUT,
        )


async def test_sigterm_while_nats_is_reconnecting_exits_zero_without_a_traceback(
    nats_server: NatsServer, settings_env: dict[str, str], tmp_path: Path
) -> None:
    """With nats-server killed under them, every service logs the disconnect, and SIGTERM exits 0 with no traceback."""
    env = settings_env | {"QUICFLEET_LIBVIRT_URI": "test:///default", "QUICFLEET_LISTEN_HOST": "127.0.0.1",
                          "QUICFLEET_LISTEN_PORT": "0", "QUICFLEET_BALANCER_STATE_DIR": str(tmp_path / "balancer")}
    logs = {name: tmp_path / f"{name}.log" for name in SERVICES}
    procs = {name: _start(name, env, logs[name]) for name in SERVICES}
    try:
        await wait_until(lambda: all("service.started" in p.read_text() for p in logs.values()), 60, 0.2,
                         "all four services started")
        await asyncio.to_thread(nats_server.stop)
        await wait_until(lambda: all("nats.disconnected" in p.read_text() for p in logs.values()), 30, 0.2,
                         "every service noticing the outage")
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        codes = {name: await asyncio.to_thread(proc.wait, 30) for name, proc in procs.items()}
    output = {name: path.read_text() for name, path in logs.items()}
    assert codes == dict.fromkeys(SERVICES, 0), {n: output[n][-1500:] for n, c in codes.items() if c}
    assert not [n for n, text in output.items() if "Traceback" in text], {n: t[-3000:] for n, t in output.items()}
