"""The four services (two scaler replicas) as real processes on a NATS cluster, and what they logged.

The provisioner runs on libvirt's test driver (`test:///default`, with a template its launcher
defines, `provisioner_main`) and the `static` address strategy pointing at real HTTP/3 backends
on loopback, so its VMs become ready and the balancer serves them for real. Every process logs
JSON lines to its own file; the tests read those to count what each did.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.natsserver import NatsCluster

ROOT = Path(__file__).resolve().parents[3]
MODULES = {"provisioner": "tests.integration.cluster.provisioner_main"}
"""Processes that do not run `services.<name>` directly."""
SCALERS = ("s1", "s2")


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nobody is bound to right now (the balancer's QUIC port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def service_envs(cluster: NatsCluster, pool: str, workdir: Path, balancer_port: int) -> dict[str, dict[str, str]]:
    """Each process's QUICFLEET_* variables: every node's URL, 3 replicas, and its own part of the fleet."""
    common = {
        "QUICFLEET_NATS_URL": cluster.url, "QUICFLEET_NATS_REPLICAS": str(len(cluster.nodes)),
        "QUICFLEET_LOG_FORMAT": "json", "QUICFLEET_LOG_LEVEL": "info", "QUICFLEET_METRICS_PORT": "0",
    }
    envs = {f"scaler-{sid}": {"QUICFLEET_SCALER_ID": sid, "QUICFLEET_INSTANCE": sid} for sid in SCALERS}
    envs["provisioner"] = {
        "QUICFLEET_LIBVIRT_URI": "test:///default", "QUICFLEET_TEMPLATE": "backend-template",
        "QUICFLEET_ADDRESS_STRATEGY": "static", "QUICFLEET_STATIC_ADDRESSES": pool, "QUICFLEET_HOST": "h1",
        "QUICFLEET_FLEET_ID": f"cluster-{uuid.uuid4().hex[:8]}", "QUICFLEET_BOOT_TIMEOUT_S": "30",
        "QUICFLEET_INSTANCE": "prov",
    }
    envs["balancer"] = {
        "QUICFLEET_LISTEN_HOST": "127.0.0.1", "QUICFLEET_LISTEN_PORT": str(balancer_port),
        "QUICFLEET_UPSTREAM_PROTOCOL": "http3", "QUICFLEET_BALANCER_STATE_DIR": str(workdir / "balancer"),
        "QUICFLEET_INSTANCE": "bal",
    }
    envs["metrics"] = {"QUICFLEET_INSTANCE": "met"}
    return {name: common | env for name, env in envs.items()}


@dataclass
class Fleet:
    """The service processes of one test, started with `start()` and stopped (SIGTERM) with `stop()`."""

    cluster: NatsCluster
    workdir: Path
    envs: dict[str, dict[str, str]]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def start(self) -> None:
        for name, env in self.envs.items():
            module = MODULES.get(name, f"services.{name.split('-')[0]}")
            with self.log(name).open("wb") as out:
                self.procs[name] = subprocess.Popen(
                    [sys.executable, "-m", module], cwd=ROOT, env=os.environ | env,
                    stdout=out, stderr=subprocess.STDOUT,
                )

    def started(self) -> bool:
        return all("service.started" in self.log(name).read_text() for name in self.envs)

    def stop(self, timeout: float = 30.0) -> dict[str, int]:
        """SIGTERM every process and return the exit codes."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        return codes

    def events(self, name: str, event: str) -> list[dict[str, Any]]:
        """The JSON log lines of process `name` whose event is `event`."""
        found = []
        for line in self.log(name).read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("event") == event:
                found.append(entry)
        return found

    def tail(self, lines: int = 40) -> str:
        """The end of every process's log, for assertion messages."""
        return "\n".join(f"--- {name}\n" + "\n".join(self.log(name).read_text().splitlines()[-lines:])
                         for name in self.envs)

    def node_of(self, client: str) -> str | None:
        """The cluster node a client connection (by name, e.g. `quicfleet-scaler-s1`) is on now."""
        for node in self.cluster.nodes:
            connz = node.monitor("/connz?limit=1000") or {}
            if any(conn.get("name") == client for conn in connz.get("connections") or []):
                return node.name
        return None

    def clients_connected(self) -> set[str]:
        """The names of the quicfleet client connections the running nodes hold."""
        names: set[str] = set()
        for node in self.cluster.nodes:
            connz = node.monitor("/connz?limit=1000") or {}
            names |= {str(c.get("name")) for c in connz.get("connections") or [] if c.get("name")}
        return {name for name in names if name.startswith("quicfleet-") and name != "quicfleet-test"}
