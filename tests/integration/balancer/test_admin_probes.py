"""The admin port's `/healthz` and `/readyz`: ready only with a VM to route to, and 503 from the start of a drain."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from services.balancer.process.health import LoopLag
from shared.bus import Bus
from tests.integration.balancer.admin import Http1, free_tcp_port, probe
from tests.integration.balancer.harness import StartBalancer, announce, list_as_provisioner
from tests.integration.balancer.processes import Fleet, process_env
from tests.support import wait_until
from tests.support.h1server import H1Backend


async def test_ready_needs_a_vm_and_healthz_reports_the_loop_lag(bus: Bus, start_balancer: StartBalancer) -> None:
    """With no VM `/readyz` is 503 `no_vm` while `/healthz` is 200; once a VM is announced `/readyz` is 200."""
    async with H1Backend() as backend, start_balancer(balancer_metrics_port=0) as service:
        port = service.metrics_port
        assert port is not None
        assert await probe(port, "/readyz") == (503, {"ready": False, "reason": "no_vm"})
        status, body = await probe(port, "/healthz")
        assert status == 200 and body["alive"] is True and 0 <= body["loop_lag_s"] < 5
        await announce(bus, service, "vm-1", backend.address)
        assert await probe(port, "/readyz") == (200, {"ready": True})


async def test_a_stalled_loop_reads_unhealthy(start_balancer: StartBalancer) -> None:
    """A loop blocked longer than the stall limit makes the next `/healthz` answer 503 with the lag it saw."""
    async with start_balancer(balancer_metrics_port=0) as service:
        assert service.metrics is not None and service.metrics.probes is not None
        lag = service.metrics.probes.lag
        lag.every_s, lag.stalled_s = 0.05, 0.3
        await wait_until(lambda: lag.last is not None, timeout=5, what="the lag probe's first tick")
        ticks = await _ticks_after(lag.last or 0.0, lag)
        time.sleep(0.6)  # the stall itself: the event loop is blocked on purpose
        await wait_until(lambda: (lag.last or 0.0) > ticks, timeout=5, what="the next tick")
        status, body = await probe(service.metrics_port or 0, "/healthz")
        assert status == 503 and body["loop_lag_s"] >= 0.3


async def test_readiness_turns_503_at_sigterm_while_requests_finish(
    bus: Bus, settings_env: dict[str, str], tmp_path: Path
) -> None:
    """A real balancer given SIGTERM with a request in flight answers `/readyz` 503 `draining` before it exits,
    then finishes the request and exits 0."""
    admin = free_tcp_port()
    env = process_env(settings_env, tmp_path) | {
        "QUICFLEET_BALANCER_METRICS_PORT": str(admin), "QUICFLEET_BALANCER_METRICS_PORT_SPAN": "1",
        "QUICFLEET_SHUTDOWN_GRACE_S": "30",
    }
    fleet = Fleet(bus, env)
    await fleet.listen()
    async with H1Backend() as backend:
        await list_as_provisioner(bus, "vm-1", backend.address)
        proc, port = await fleet.start(0)
        try:
            await wait_until(lambda: _status(admin, "/readyz", 200), timeout=15, what="ready")
            client = await Http1.open(port)
            client.send("/slow?ms=1500")  # well under half the 30 s shutdown grace
            await wait_until(lambda: "/slow" in backend.paths, timeout=10, what="the request at the VM")
            proc.send_signal(signal.SIGTERM)
            await wait_until(lambda: _status(admin, "/readyz", 503), timeout=5, interval=0.01, what="503")
            assert proc.poll() is None, "the process was still draining when readiness said 503"
            assert (await probe(admin, "/readyz"))[1] == {"ready": False, "reason": "draining"}
            assert (await client.response())[0] == 200
            assert await asyncio.to_thread(proc.wait, 30) == 0
        finally:
            fleet.kill_all()


async def _ticks_after(last: float, lag: LoopLag) -> float:
    """The loop time of a tick after `last` (so the probe sleeps on the short interval when the stall begins)."""
    await wait_until(lambda: (lag.last or 0.0) > last, timeout=5, what="a tick at the short interval")
    return lag.last or 0.0


async def _status(port: int, path: str, wanted: int) -> bool:
    try:
        return (await probe(port, path))[0] == wanted
    except OSError:
        return False
