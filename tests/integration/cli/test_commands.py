"""The `quicfleet` CLI as a subprocess against a real nats-server and real services."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from ops.natsserver import NatsServer, free_port
from services.scaler.bootstrap import bootstrap as scaler_bootstrap
from services.scaler.settings import ScalerSettings
from shared.bus import Bus
from shared.contract.events import VmState, VmStateChanged
from shared.settings import ServiceSettings
from tests.integration.cli.support import ScriptedFleet, cli
from tests.support.h3server import H3Backend


async def test_status_policy_and_refusals_against_the_real_scaler(
    nats_server: NatsServer, settings_env: dict[str, str]
) -> None:
    """Status and policy answer as JSON; refused commands exit 1 with the scaler's own message on one line."""
    async with scaler_bootstrap(ScalerSettings()):
        status = await cli(nats_server.url, "--json", "status")
        changed = await cli(nats_server.url, "--json", "policy", "set", "max_replicas=4", "target=3")
        shown = await cli(nats_server.url, "--json", "policy", "show")
        inconsistent = await cli(nats_server.url, "policy", "set", "min_replicas=5", "max_replicas=2")
        too_many = await cli(nats_server.url, "scale", "9", "--no-wait")
        unknown = await cli(nats_server.url, "drain", "qf-nosuch")
    assert status.code == 0, status.err
    assert json.loads(status.out)["policy"]["max_replicas"] >= 1
    assert changed.code == 0 and json.loads(changed.out)["max_replicas"] == 4
    assert json.loads(shown.out)["target"] == 3
    for refused, words in ((inconsistent, "invalid: "), (too_many, "invalid: "), (unknown, "not_found: ")):
        assert refused.code == 1, refused
        assert refused.err.startswith(f"quicfleet: {words}") and "Traceback" not in refused.err


async def test_unreachable_nats_is_one_line_and_exit_3() -> None:
    """With no NATS listening the CLI gives up within its timeout and says where it tried."""
    url = f"nats://127.0.0.1:{free_port()}"
    result = await cli(url, "--timeout", "2", "status", timeout=20)
    assert result.code == 3
    assert result.err.strip() == f"quicfleet: cannot reach NATS at {url}: no server answered"


async def test_missing_service_is_exit_3(nats_server: NatsServer) -> None:
    """NATS up but no scaler: the command fails fast with `unavailable` instead of hanging."""
    result = await cli(nats_server.url, "--timeout", "2", "status")
    assert result.code == 3 and "unavailable: no service answers" in result.err


async def test_scale_follows_vm_events_until_ready(nats_server: NatsServer, settings_env: dict[str, str]) -> None:
    """`scale 2` prints progress from the VM events and exits 0 once two VMs are ready."""
    async with ScriptedFleet(ServiceSettings()):
        result = await cli(nats_server.url, "--json", "scale", "2", "--wait-timeout", "40")
    assert result.code == 0, result.err
    assert json.loads(result.out) == {"desired": 2, "reached": True, "summary": "2/2 ready"}


async def test_scale_gives_up_when_vms_keep_failing(nats_server: NatsServer, settings_env: dict[str, str]) -> None:
    """Failed VMs beyond --max-failures end the wait with exit 1 and their reasons."""
    async with ScriptedFleet(ServiceSettings(), fail=True):
        result = await cli(nats_server.url, "scale", "2", "--max-failures", "2", "--wait-timeout", "40")
    assert result.code == 1
    assert "scaling failed: qf-0: template broken; qf-1: template broken" in result.err


async def test_scale_times_out_when_the_fleet_never_gets_there(
    nats_server: NatsServer, settings_env: dict[str, str]
) -> None:
    """With no provisioner the real scaler never reaches the size, and `scale` stops at its timeout."""
    async with scaler_bootstrap(ScalerSettings()):
        result = await cli(nats_server.url, "scale", "2", "--wait-timeout", "2")
    assert result.code == 1 and "did not reach 2 ready VMs within 2 s" in result.err


async def test_watch_prints_each_event_as_a_json_line(bus: Bus, nats_server: NatsServer) -> None:
    """`watch --json --count 2` prints two VM events as JSON lines and exits 0."""
    watcher = asyncio.create_task(cli(nats_server.url, "--json", "watch", "--no-load", "--count", "2"))
    while not watcher.done():
        await bus.publish(bus.subjects.vm(VmState.BOOTING), VmStateChanged(vm="qf-w", state=VmState.BOOTING))
        await asyncio.wait([watcher], timeout=0.2)
    result = watcher.result()
    lines = [json.loads(line) for line in result.out.splitlines()]
    assert result.code == 0 and len(lines) == 2
    assert lines[0]["subject"] == "fleet.vm.booting" and lines[0]["event"]["vm"] == "qf-w"


async def test_health_names_services_that_do_not_answer(nats_server: NatsServer, settings_env: dict[str, str]) -> None:
    """`health scaler` passes with a scaler up, `health balancer` fails naming it, `health nats` checks JetStream."""
    async with scaler_bootstrap(ScalerSettings()):
        scaler = await cli(nats_server.url, "health", "scaler")
        balancer = await cli(nats_server.url, "health", "balancer", "--window", "1")
        only_nats = await cli(nats_server.url, "health", "nats")
    assert scaler.code == 0 and "ok: scaler" in scaler.out
    assert balancer.code == 3 and "from: balancer" in balancer.err
    assert only_nats.code == 0


async def test_get_speaks_http3_to_the_given_url(tmp_path: Path, nats_server: NatsServer) -> None:
    """`get --url … --count 2` makes two HTTP/3 GETs and shows each answer's body."""
    async with H3Backend(tmp_path) as backend:
        result = await cli(nats_server.url, "--json", "get", "--url", f"https://{backend.address}/", "--count", "2")
    assert result.code == 0, result.err
    answers = json.loads(result.out)["answers"]
    assert [a["http_version"] for a in answers] == [30, 30]
    assert answers[0]["body"] == f"Server Address: {backend.address}"


async def test_get_without_a_balancer_says_so(nats_server: NatsServer, settings_env: dict[str, str]) -> None:
    """With no balancer in the status, `get` exits 3 asking for --url."""
    async with scaler_bootstrap(ScalerSettings()):
        result = await cli(nats_server.url, "get")
    assert result.code == 3 and "no balancer has reported yet" in result.err


async def test_serve_runs_a_service_until_sigterm(
    nats_server: NatsServer, settings_env: dict[str, str], tmp_path: Path
) -> None:
    """`quicfleet serve metrics` registers the service on NATS and exits 0 on SIGTERM; unknown names exit 2."""
    env = os.environ | {"QUICFLEET_METRICS_PORT": "0"}
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        served = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ops.cli", "serve", "metrics", env=env, stdout=sink, stderr=sink)
    try:
        healthy = await cli(nats_server.url, "health", "metrics", "--window", "20")
    finally:
        served.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(served.wait(), 30)
    unknown = await cli(nats_server.url, "serve", "nosuch")
    assert healthy.code == 0, healthy.err + log.read_text()[-3000:]
    assert code == 0
    assert unknown.code == 2 and "known: balancer, metrics, scaler, provisioner" in unknown.err


async def test_watch_ends_with_exit_3_when_nats_goes_away(bus: Bus, nats_server: NatsServer) -> None:
    """A running `watch` whose NATS server stops says it lost the connection and exits 3 instead of hanging."""
    watcher = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ops.cli", "--nats-url", nats_server.url, "--json", "watch", "--no-load",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert watcher.stdout is not None and watcher.stderr is not None
    first = asyncio.create_task(watcher.stdout.readline())
    while not first.done():
        await bus.publish(bus.subjects.vm(VmState.READY), VmStateChanged(vm="qf-x", state=VmState.READY))
        await asyncio.wait([first], timeout=0.2)
    assert json.loads(first.result())["event"]["vm"] == "qf-x"
    await asyncio.to_thread(nats_server.stop)
    code = await asyncio.wait_for(watcher.wait(), 30)
    assert code == 3
    assert "lost the connection to NATS" in (await watcher.stderr.read()).decode()


async def test_malformed_arguments_are_usage_errors(nats_server: NatsServer) -> None:
    """A VM name that cannot exist or a size over the contract's ceiling exits 2 with the rule, no trace."""
    bad_name = await cli(nats_server.url, "drain", "bad name!")
    too_big = await cli(nats_server.url, "scale", "5000", "--no-wait")
    for result in (bad_name, too_big):
        assert result.code == 2 and result.err.startswith("quicfleet: invalid argument: ")
        assert "Traceback" not in result.err
