"""Real balancer processes on one port for the process tests (workers, replicas, rolling restarts)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

from shared.bus import Bus
from shared.contract.load import BalancerReported
from tests.integration.balancer.load import Load
from tests.support import Collector, wait_until

ROOT = Path(__file__).resolve().parents[3]


CONNECTIONS = 50


class Fleet:
    """Balancer processes started here, found again by their load reports."""

    def __init__(self, bus: Bus, env: dict[str, str]) -> None:
        self.bus, self.env = bus, env
        self.reports = Collector()
        self.procs: list[subprocess.Popen[bytes]] = []

    async def listen(self) -> None:
        async def on_report(event: BalancerReported, _msg: object) -> None:
            await self.reports(event)

        await self.bus.subscribe(self.bus.subjects.balancer_report, BalancerReported, on_report)

    async def start(
        self, port: int, workers: int = 1, log: IO[bytes] | None = None
    ) -> tuple[subprocess.Popen[bytes], int]:
        """A balancer process (with `workers` processes) on `port`; returns it and the bound port once every
        new process reported. `log` takes its stdout and stderr (else they are dropped)."""
        seen = {r.balancer for r in self.reports.messages}
        env = self.env | {"QUICFLEET_BALANCER_WORKERS": str(workers), "QUICFLEET_LISTEN_PORT": str(port)}
        proc = subprocess.Popen([sys.executable, "-m", "services.balancer"], cwd=ROOT, env=env,
                                stdout=log or subprocess.DEVNULL, stderr=log or subprocess.DEVNULL)
        self.procs.append(proc)
        await wait_until(lambda: len({r.balancer for r in self.reports.messages} - seen) >= workers, timeout=30,
                         what=f"{workers} new balancer(s) reporting")
        fresh = next(r for r in self.reports.messages if r.balancer not in seen)
        return proc, int(fresh.address.rsplit(":", 1)[1])

    async def stop(self, pid: int) -> int:
        """SIGTERM one process and wait for its drain to end; returns its exit code (0 for a worker)."""
        os.kill(pid, signal.SIGTERM)
        for proc in self.procs:
            if proc.pid == pid:
                return await asyncio.to_thread(proc.wait, 30)
        await wait_until(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), timeout=30, what="worker gone")
        return 0

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def process_env(settings_env: dict[str, str], state_dir: Path) -> dict[str, str]:
    """The environment of a balancer process in these tests: fast listing and reports, no slow start."""
    return os.environ | settings_env | {
        "QUICFLEET_BALANCER_LIST_WINDOW_S": "0.2", "QUICFLEET_BALANCER_REPORT_INTERVAL_S": "0.3",
        "QUICFLEET_BALANCER_STATE_DIR": str(state_dir), "QUICFLEET_BALANCER_SLOW_START_S": "0",
        "QUICFLEET_LOG_LEVEL": "warning",
    }


def _zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def progress(load: Load, requests: int = CONNECTIONS) -> None:
    """Wait until the load got `requests` more answers (the fleet changed under it meanwhile)."""
    target = load.ok + requests
    await wait_until(lambda: load.ok >= target, timeout=30, what=f"{requests} more answers")
