"""`quicfleet up`: the whole local stack as a subprocess, stopped by SIGTERM with nothing left behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from pathlib import Path

import pytest

from ops.natsserver import free_port
from tests.integration.cli.support import cli
from tests.support import wait_until

pytestmark = pytest.mark.integration


def processes_with(marker: str) -> list[int]:
    """Pids whose environment carries `marker` (the stack passes its environment to every child)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


async def test_up_runs_nats_and_four_services_and_stops_cleanly(tmp_path: Path) -> None:
    """`up --no-lab` answers status and every $SRV.PING, restarts a service that dies and a nats-server
    that dies (the services answer again), keeps its NATS store apart from lab runs, and SIGTERM stops
    every child and exits 0."""
    port, token = free_port(), uuid.uuid4().hex
    marker = f"QUICFLEET_STACK_TEST={token}"
    env = os.environ | {
        "QUICFLEET_STACK_TEST": token, "QUICFLEET_LISTEN_PORT": "0", "QUICFLEET_METRICS_PORT": "0",
        "QUICFLEET_LIBVIRT_URI": "", "COLUMNS": "300",
    }
    log = tmp_path / "up.log"
    with log.open("wb") as sink:
        stack = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ops.cli", "up", "--no-lab", "--workdir", str(tmp_path / "run"),
            "--nats-port", str(port), env=env, stdout=sink, stderr=asyncio.subprocess.STDOUT,
        )
    try:
        await wait_until(lambda: "quicfleet is up" in log.read_text(), timeout=120, what="the stack to come up")
        url = f"nats://127.0.0.1:{port}"
        health = await cli(url, "health")
        status = await cli(url, "--json", "status")
        assert len(processes_with(marker)) >= 5
        metrics = [p for p in processes_with(marker) if b"services.metrics" in Path(f"/proc/{p}/cmdline").read_bytes()]
        os.kill(metrics[0], signal.SIGKILL)
        await wait_until(lambda: "metrics exited with code -9" in log.read_text(), timeout=30, what="crash report")
        await wait_until(lambda: "metrics restarted" in log.read_text(), timeout=30, what="the restart")
        again = await cli(url, "health", "--window", "15")
        nats = [p for p in processes_with(marker) if b"nats-server" in Path(f"/proc/{p}/cmdline").read_bytes()]
        os.kill(nats[0], signal.SIGKILL)
        await wait_until(lambda: "nats-server restarted" in log.read_text(), timeout=30, what="NATS restarted")
        after_nats = await cli(url, "health", "--window", "20")
    finally:
        stack.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(stack.wait(), 60)
    text = log.read_text()
    assert health.code == 0, health.err + text[-3000:]
    assert "balancer, metrics, provisioner, scaler" in health.out
    assert again.code == 0 and "balancer, metrics, provisioner, scaler" in again.out, again.err + text[-3000:]
    assert after_nats.code == 0 and "balancer, metrics, provisioner, scaler" in after_nats.out, after_nats.err
    assert "nats-server exited with code -9; restarting" in text and "stopping everything" not in text
    assert status.code == 0 and "desired" in json.loads(status.out)
    assert "WARNING: --no-lab was given" in text and "libvirt's test driver" in text
    assert (tmp_path / "run" / "nats-test" / "jetstream").is_dir(), "a test-driver run keeps its own NATS store"
    assert code == 0, text[-3000:]
    assert "stopped; no process left behind" in text
    assert processes_with(marker) == []
