"""Extra worker processes that share the UDP port through SO_REUSEPORT.

Each worker is a whole balancer (its own NATS connection, id and load report), started from the
same environment with `workers=1` and the port the first process bound. The kernel spreads
clients across the sockets by their address, so one QUIC connection stays on one worker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import structlog

from services.balancer.settings import BalancerSettings

log = structlog.get_logger("balancer.workers")


class Workers:
    """The child processes of a multi-worker balancer."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, settings: BalancerSettings, port: int) -> None:
        """Start `workers - 1` children on `port` (the parent is worker zero)."""
        for index in range(1, settings.balancer_workers):
            env = os.environ | {
                "QUICFLEET_BALANCER_WORKERS": "1",
                "QUICFLEET_LISTEN_PORT": str(port),
                "QUICFLEET_LISTEN_HOST": settings.listen_host,
                "QUICFLEET_INSTANCE": f"{settings.instance[:40]}-w{index}",
            }
            if settings.balancer_metrics_port is not None:  # each worker serves its own /metrics
                env["QUICFLEET_BALANCER_METRICS_PORT"] = str(settings.balancer_metrics_port + index
                                                             if settings.balancer_metrics_port else 0)
            self.procs.append(subprocess.Popen([sys.executable, "-m", "services.balancer"], env=env))
        if self.procs:
            log.info("workers.started", workers=len(self.procs) + 1, port=port)

    def signal(self, number: int) -> None:
        """Pass a signal on to every child still running (SIGHUP: they reload their certificate too)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(number)

    async def stop(self) -> None:
        """SIGTERM every child and wait for it (each drains like the parent)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            await asyncio.to_thread(proc.wait)
        self.procs.clear()
