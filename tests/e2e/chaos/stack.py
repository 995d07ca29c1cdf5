"""The e2e stack with what the fault scenarios need: two scalers, NATS with monitoring, each
process killable and restartable by name, and its RSS readable.

Each process gets its own QUICFLEET_INSTANCE (its name here), so its NATS connection is named
`quicfleet-<service>-<name>` and NATS's `/connz` tells which ones are connected again after a
fault. The scalers get fixed ids, so the lease's holder names the process to kill.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from ops.lab import Lab, netns
from ops.natsserver import NatsServer, free_port
from tests.e2e.stack import REPO, Stack

PROCESSES = {"provisioner": "provisioner", "metrics": "metrics", "scaler-1": "scaler", "scaler-2": "scaler",
             "balancer": "balancer"}
"""Process name -> the service it runs."""
LAME_DUCK = 'lame_duck_duration: "30s"\nlame_duck_grace_period: "1s"\n'
"""A lame-duck stop short enough for a test (nats-server spreads it over at least 30 s; its default is 2 minutes)."""


class ChaosStack(Stack):
    """nats-server (with monitoring) plus five service processes in `lab`'s namespace."""

    def __init__(self, lab: Lab, workdir: Path, extra_env: dict[str, str] | None = None) -> None:
        super().__init__(lab, workdir)
        self.extra_env = extra_env or {}

    def start(self) -> None:
        (self.workdir / "nats").mkdir(parents=True, exist_ok=True)
        with netns.entered(self.lab.name):
            monitor = free_port()
            self.nats = NatsServer(self.workdir / "nats", extra=f'{LAME_DUCK}http: "127.0.0.1:{monitor}"\n',
                                   monitor_port=monitor)
            self.nats.start()
        for name in PROCESSES:
            self.spawn(name)

    def spawn(self, name: str) -> None:
        """Start (or start again) the process `name` with its own instance name and scaler id."""
        env = self.env() | self.extra_env | {"QUICFLEET_INSTANCE": name}
        if PROCESSES[name] == "scaler":
            env["QUICFLEET_SCALER_ID"] = f"chaos-{name}"
        with self.log(name).open("ab") as log:
            self.processes[name] = subprocess.Popen(
                self.lab.wrap([sys.executable, "-m", f"services.{PROCESSES[name]}"]), cwd=REPO, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )

    def kill(self, name: str) -> None:
        """SIGKILL one process (the crash case) and reap it."""
        proc = self.processes[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def restart_nats_in_namespace(self) -> None:
        """Start the (killed or stopped) nats-server again on its port, with its data."""
        assert self.nats is not None
        with netns.entered(self.lab.name):
            self.nats.start()

    def lame_duck(self) -> None:
        """Put nats-server into lame-duck mode (SIGUSR2): it stops accepting and sends clients away."""
        assert self.nats is not None and self.nats.process is not None
        self.nats.process.send_signal(signal.SIGUSR2)

    def connected(self) -> set[str]:
        """Names of our processes whose NATS connection the server lists now (empty when it is down)."""
        assert self.nats is not None
        found = self._connz()
        names = {str(c.get("name", "")) for c in (found or {}).get("connections", [])}
        return {p for p in PROCESSES if any(n.endswith(f"-{p}") for n in names)}

    def _connz(self) -> dict[str, Any] | None:
        assert self.nats is not None
        with netns.entered(self.lab.name):
            return self.nats.monitor("/connz?limit=1024")
