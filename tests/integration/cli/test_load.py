"""`quicfleet load` as a subprocess: real HTTP/3 over UDP through a real balancer to aioquic backends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ops.natsserver import NatsServer, free_port
from services.balancer.bootstrap import bootstrap
from services.balancer.service import BalancerService
from services.balancer.settings import BalancerSettings
from shared.bus import Bus
from shared.contract.commands import GetStatus
from shared.contract.status import BalancerStatus, FleetStatus
from shared.settings import ServiceSettings
from tests.integration.balancer.harness import announce
from tests.integration.cli.support import ScriptedFleet, cli
from tests.support.h3server import H3Backend


@asynccontextmanager
async def balancer(tmp_path: Path, bus: Bus, *backends: H3Backend) -> AsyncIterator[BalancerService]:
    """A balancer on a free UDP port speaking HTTP/3 to `backends`, announced as vm-a, vm-b …"""
    settings = BalancerSettings(
        listen_port=0, balancer_state_dir=tmp_path / "balancer", balancer_list_window_s=0.2,
        balancer_slow_start_s=0, health_interval_s=60, health_path="/healthz", upstream_protocol="http3",
    )
    async with bootstrap(settings) as service:
        for letter, backend in zip("abcdefgh", backends, strict=False):
            await announce(bus, service, f"vm-{letter}", backend.address)
        yield service


class FleetWithBalancer(ScriptedFleet):
    """A scripted scaler whose status names one balancer, listening on every address as services report it."""

    def __init__(self, settings: ServiceSettings, balancer_port: int) -> None:
        super().__init__(settings)
        self.balancer_port = balancer_port

    async def status(self, cmd: GetStatus) -> FleetStatus:
        listed = BalancerStatus(id="lb-test", address=f"0.0.0.0:{self.balancer_port}", last_seen=datetime.now(UTC))
        return (await super().status(cmd)).model_copy(update={"balancers": [listed]})


def summary_of(out: str) -> dict[str, Any]:
    """The one JSON object `--json` prints (json.loads fails on anything else on stdout)."""
    summary: dict[str, Any] = json.loads(out)
    return summary


async def test_load_at_a_rate_reaches_both_backends_without_errors(
    nats_server: NatsServer, settings_env: dict[str, str], bus: Bus, tmp_path: Path
) -> None:
    """`load --rate 50 --duration 3 --json` sends about 150 requests, all answered, by both backends."""
    async with H3Backend(tmp_path) as a, H3Backend(tmp_path) as b, balancer(tmp_path, bus, a, b) as lb:
        result = await cli(nats_server.url, "--json", "load", f"https://127.0.0.1:{lb.port}/",
                           "--rate", "50", "--duration", "3")
    assert result.code == 0, result.err
    summary = summary_of(result.out)
    assert 120 <= summary["requests"] <= 160
    assert summary["ok"] == summary["requests"] and summary["failed"] == 0
    assert set(summary["errors"].values()) == {0} and summary["statuses"] == {"200": summary["requests"]}
    answered = {(x["name"], x["address"]): x["requests"] for x in summary["backends"]}
    assert set(answered) == {("vm-a", a.address), ("vm-b", b.address)}
    assert sum(answered.values()) == summary["requests"]
    assert a.paths.count("/") + b.paths.count("/") == summary["requests"]
    assert summary["latency_ms"]["p50"] <= summary["latency_ms"]["p99"] <= summary["latency_ms"]["max"]


async def test_load_counts_5xx_answers_and_exits_1(
    nats_server: NatsServer, settings_env: dict[str, str], bus: Bus, tmp_path: Path
) -> None:
    """Against a backend answering 503 every request counts as a 5xx error and the exit code is 1."""
    async with H3Backend(tmp_path, status=503) as bad, balancer(tmp_path, bus, bad) as lb:
        result = await cli(nats_server.url, "--json", "load", f"https://127.0.0.1:{lb.port}/",
                           "--rate", "20", "--duration", "1")
    assert result.code == 1
    summary = summary_of(result.out)
    assert summary["requests"] > 0 and summary["ok"] == 0
    assert summary["failed"] == summary["errors"]["5xx"] == summary["requests"]
    assert summary["latency_ms"]["p50"] is None
    assert f"quicfleet: {summary['requests']} of {summary['requests']} requests failed (5xx" in result.err


async def test_load_finds_the_balancer_in_the_fleet_status(
    nats_server: NatsServer, settings_env: dict[str, str], bus: Bus, tmp_path: Path
) -> None:
    """Without a URL, a closed-loop `load --concurrency 4` goes to the balancer the status names."""
    async with (
        H3Backend(tmp_path) as a,
        balancer(tmp_path, bus, a) as lb,
        FleetWithBalancer(ServiceSettings(), lb.port),
    ):
        result = await cli(nats_server.url, "--json", "load", "--concurrency", "4", "--duration", "1", "--path", "/x")
    assert result.code == 0, result.err
    summary = summary_of(result.out)
    assert summary["url"] == f"https://127.0.0.1:{lb.port}/x" and summary["mode"] == "concurrency"
    assert summary["ok"] == summary["requests"] > 0
    assert a.paths.count("/x") == summary["requests"]


async def test_load_without_a_balancer_listening_exits_3(nats_server: NatsServer) -> None:
    """When no QUIC handshake completes, `load` gives up after --timeout with one line and exit 3."""
    url = f"https://127.0.0.1:{free_port()}/"
    result = await cli(nats_server.url, "--timeout", "1", "load", url, "--rate", "10", "--duration", "1")
    assert result.code == 3 and result.out == ""
    assert result.err.strip() == f"quicfleet: cannot reach {url} over HTTP/3: no QUIC handshake within 1 s"


async def test_load_needs_exactly_one_of_rate_and_concurrency(nats_server: NatsServer) -> None:
    """Neither or both of --rate and --concurrency is a usage error (exit 2) before anything is sent."""
    url = f"https://127.0.0.1:{free_port()}/"
    neither = await cli(nats_server.url, "load", url)
    both = await cli(nats_server.url, "load", url, "--rate", "5", "--concurrency", "2")
    for result in (neither, both):
        assert result.code == 2 and "give exactly one of --rate" in result.err
