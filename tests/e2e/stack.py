"""NATS and the four services, run inside the lab's namespace as separate processes.

The services get the lab's libvirt, network and template through QUICFLEET_* variables, the
same way an operator configures them; every process's output goes to a log file under the
stack's workdir, which a failing test names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ops.lab import Lab, netns
from ops.natsserver import NatsServer

SERVICES = ("provisioner", "metrics", "scaler", "balancer")
REPO = Path(__file__).resolve().parents[2]
BALANCER_PORT = 8443


class Stack:
    """nats-server plus the services, all inside `lab`'s namespace."""

    def __init__(self, lab: Lab, workdir: Path) -> None:
        self.lab = lab
        self.workdir = workdir
        self.nats: NatsServer | None = None
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def balancer_url(self) -> str:
        return f"https://127.0.0.1:{BALANCER_PORT}/"

    def env(self) -> dict[str, str]:
        assert self.nats is not None
        info = self.lab.info
        return os.environ | {
            "QUICFLEET_NATS_URL": self.nats.url,
            "QUICFLEET_LOG_FORMAT": "json",
            "QUICFLEET_LIBVIRT_URI": info.libvirt_uri,
            "QUICFLEET_NETWORK": info.network,
            "QUICFLEET_TEMPLATE": info.template,
            "QUICFLEET_HOST": "lab",
            "QUICFLEET_MAX_VMS": "3",
            "QUICFLEET_BOOT_TIMEOUT_S": "240",
            "QUICFLEET_PROVISIONER_MAX_IN_FLIGHT": "3",
            "QUICFLEET_RECONCILE_INTERVAL_S": "10",
            "QUICFLEET_METRICS_PORT": "0",
            "QUICFLEET_LISTEN_HOST": "127.0.0.1",
            "QUICFLEET_LISTEN_PORT": str(BALANCER_PORT),
            "QUICFLEET_BALANCER_STATE_DIR": str(self.workdir / "balancer"),
            "QUICFLEET_UPSTREAM_TLS": "true",
            # A VM killed behind our back drops packets silently (its bridge port vanishes): a
            # request in flight to it is retried elsewhere only after this (Caddy answers in ms).
            "QUICFLEET_UPSTREAM_FIRST_BYTE_TIMEOUT_S": "3",
            "QUICFLEET_SCALER_RESYNC_S": "5",
        }

    def start(self) -> None:
        """Start nats-server (inside the namespace), then each service."""
        (self.workdir / "nats").mkdir(parents=True, exist_ok=True)
        with netns.entered(self.lab.name):
            self.nats = NatsServer(self.workdir / "nats")
            self.nats.start()
        env = self.env()
        for service in SERVICES:
            self.processes[service] = self._spawn(service, env)

    def _spawn(self, service: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with self.log(service).open("ab") as log:
            return subprocess.Popen(
                self.lab.wrap([sys.executable, "-m", f"services.{service}"]),
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self, service: str) -> Path:
        return self.workdir / f"{service}.log"

    def exited(self) -> dict[str, int]:
        """Services that are no longer running, with their exit codes."""
        return {name: code for name, proc in self.processes.items() if (code := proc.poll()) is not None}

    def rss_mib(self) -> dict[str, float]:
        """Resident memory of every running service process, in MiB (the chaos invariant I4)."""
        return {name: _rss_mib(proc.pid) for name, proc in self.processes.items() if proc.poll() is None}

    def stop(self) -> None:
        """SIGTERM every service (they drain), then nats-server; kill what does not exit."""
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self.nats is not None:
            self.nats.stop()


def _rss_mib(pid: int) -> float:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:  # gone meanwhile
        return 0.0
    return next((int(line.split()[1]) / 1024 for line in lines if line.startswith("VmRSS:")), 0.0)


def log_lines(stack: Stack, service: str, event: str) -> list[dict[str, Any]]:
    """The service's JSON log lines for `event`."""
    found = []
    for line in stack.log(service).read_text(errors="replace").splitlines():
        if f'"{event}"' in line:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == event:
                found.append(record)
    return found


S = TypeVar("S", bound=Stack)


@contextmanager
def running_in(lab: Lab, stack: S) -> Iterator[S]:
    """`stack` started inside the lab's namespace, this thread staying there until it is stopped (module fixtures)."""
    with netns.entered(lab.name):
        try:
            stack.start()
            yield stack
        finally:
            stack.stop()
