"""`quicfleet up`: the whole local stack as a subprocess, stopped by SIGTERM with nothing left behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import uuid
from pathlib import Path

import nats

from ops.cli.login import login_dir
from ops.natsserver import MONITOR_OFFSET, ROUTE_OFFSET, free_port
from tests.integration.cli.support import Result, cli
from tests.support import wait_until


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
        anonymous = await _refused(url)
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
    assert "NATS authorisation on" in text and anonymous, "up's NATS refuses a client without a login"
    assert not (login_dir(os.environ) / f"nats-{port}.json").exists(), "up takes the CLI's pointer back"
    assert "WARNING: --no-lab was given" in text and "libvirt's test driver" in text
    assert (tmp_path / "run" / "nats-test" / "jetstream").is_dir(), "a test-driver run keeps its own NATS store"
    assert code == 0, text[-3000:]
    assert "stopped; no process left behind" in text
    assert processes_with(marker) == []


def free_cluster_port(size: int) -> int:
    """A first client port whose cluster layout (client, route +2000 and monitoring +4000 ports) is all free now."""
    while True:
        first = free_port()
        ports = [p + offset for p in range(first, first + size) for offset in (0, ROUTE_OFFSET, MONITOR_OFFSET)]
        if max(ports) <= 65535 and all(_bindable(p) for p in ports):
            return first


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def _replicas(url: str, auth_dir: Path) -> int:
    """The scaler bucket's copies, read as the scaler's user (the operator may not read streams)."""
    password = (auth_dir / "scaler" / "password").read_text().strip()
    nc = await nats.connect(servers=url.split(","), connect_timeout=2, max_reconnect_attempts=2, user="scaler",
                            password=password, inbox_prefix="_INBOX_scaler")
    try:
        info = await nc.jetstream().stream_info("KV_quicfleet_scaler")
        return info.config.num_replicas or 1
    finally:
        await nc.close()


async def _refused(url: str) -> bool:
    try:
        nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0)
    except nats.errors.Error as error:
        return "authorization" in str(error).lower()
    await nc.close()
    return False


async def _healthy(url: str) -> Result | None:
    result = await cli(url, "health", "--window", "5")
    return result if result.code == 0 else None


async def test_up_with_a_nats_cluster_restarts_a_killed_node(tmp_path: Path) -> None:
    """`up --nats-cluster 3` runs three routed nodes, keeps the scaler's bucket on all three, restarts a node
    killed with -9 while the services keep answering, and SIGTERM stops every node and service with exit 0."""
    port, token = free_cluster_port(3), uuid.uuid4().hex
    marker = f"QUICFLEET_STACK_TEST={token}"
    env = os.environ | {
        "QUICFLEET_STACK_TEST": token, "QUICFLEET_LISTEN_PORT": "0", "QUICFLEET_METRICS_PORT": "0",
        "QUICFLEET_LIBVIRT_URI": "", "COLUMNS": "300",
    }
    log = tmp_path / "up.log"
    with log.open("wb") as sink:
        stack = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ops.cli", "up", "--no-lab", "--workdir", str(tmp_path / "run"),
            "--nats-port", str(port), "--nats-cluster", "3", env=env, stdout=sink, stderr=asyncio.subprocess.STDOUT,
        )
    url = ",".join(f"nats://127.0.0.1:{port + i}" for i in range(3))
    try:
        await wait_until(lambda: "quicfleet is up" in log.read_text(), timeout=120, what="the stack to come up")
        health = await cli(url, "health")
        replicas = await _replicas(url, tmp_path / "run" / "nats-auth")
        second = [p for p in processes_with(marker) if b"node2/nats.conf" in Path(f"/proc/{p}/cmdline").read_bytes()]
        os.kill(second[0], signal.SIGKILL)
        during = await cli(url, "--json", "status")
        await wait_until(lambda: "nats-server nats-2 restarted" in log.read_text(), timeout=30, what="nats-2 back")
        # a node just back may not answer JetStream requests until it has caught up (~3 s measured)
        after = await wait_until(lambda: _healthy(url), timeout=40, interval=0.5, what="health after nats-2 is back")
    finally:
        stack.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(stack.wait(), 60)
    text = log.read_text()
    assert health.code == 0 and "balancer, metrics, provisioner, scaler" in health.out, health.err + text[-3000:]
    assert replicas == 3
    assert during.code == 0 and "desired" in json.loads(during.out), during.err
    assert "nats-server nats-2 exited with code -9; restarting" in text
    assert "balancer, metrics, provisioner, scaler" in after.out
    assert "NATS cluster of 3 nodes" in text
    assert all((tmp_path / "run" / "nats-test-cluster3" / f"node{i}" / "jetstream").is_dir() for i in (1, 2, 3))
    assert code == 0, text[-3000:]
    assert processes_with(marker) == []
