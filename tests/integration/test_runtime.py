"""The service runtime against a real nats-server: envelope, micro registration, reconnects, signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ops.natsserver import NatsServer
from services.scaler.bootstrap import bootstrap as scaler_bootstrap
from services.scaler.settings import ScalerSettings
from shared.bus import Bus
from shared.contract.base import ErrorCode
from shared.contract.commands import GetStatus, ScaleFleet
from shared.contract.status import DesiredState, FleetStatus
from shared.errors import BusError
from tests.support import wait_until

SERVICES = ("balancer", "metrics", "scaler", "provisioner")
ROOT = Path(__file__).resolve().parents[2]


async def test_status_command_answers_with_ok_envelope(bus: Bus, settings_env: dict[str, str]) -> None:
    """`fleet.cmd.status` gets an ok reply carrying the desired size and the policy."""
    async with scaler_bootstrap(ScalerSettings()):
        result = await bus.request(bus.subjects.cmd_status, GetStatus(), FleetStatus)
    assert result.desired == 0
    assert result.policy.max_replicas >= result.policy.min_replicas


async def test_garbage_gets_invalid_reply_with_micro_headers(bus: Bus, settings_env: dict[str, str]) -> None:
    """Non-JSON, wrong types and absurd sizes get `invalid` replies; the service keeps answering."""
    async with scaler_bootstrap(ScalerSettings()):
        for garbage in (b"\xff\x00not json", b'{"replicas": "many"}', b'{"replicas": 99999999}', b"[]"):
            msg = await bus.nc.request(bus.subjects.cmd_scale, garbage, timeout=5)
            body = json.loads(msg.data)
            assert body["ok"] is False and body["error"]["code"] == "invalid", body
            assert msg.headers is not None and msg.headers["Nats-Service-Error-Code"] == "400"
            assert "Traceback" not in body["error"]["message"]
        result = await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=2), DesiredState)
    assert result.desired == 2


async def test_out_of_bounds_scale_is_invalid_and_changes_nothing(bus: Bus, settings_env: dict[str, str]) -> None:
    """A scale outside [min, max] is refused and the desired size stays as it was."""
    async with scaler_bootstrap(ScalerSettings()):
        with pytest.raises(BusError) as caught:
            await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=999), DesiredState)
        assert caught.value.code is ErrorCode.INVALID
        assert "bounds" in caught.value.message
        status = await bus.request(bus.subjects.cmd_status, GetStatus(), FleetStatus)
    assert status.desired == 0


async def test_service_reconnects_after_nats_restart(
    bus: Bus, nats_server: NatsServer, settings_env: dict[str, str]
) -> None:
    """A service keeps answering commands after the NATS server is stopped and started again."""
    async with scaler_bootstrap(ScalerSettings()) as scaler:
        await bus.request(bus.subjects.cmd_status, GetStatus(), FleetStatus)
        await asyncio.to_thread(nats_server.restart)
        await wait_until(lambda: scaler.bus.connected and bus.connected, timeout=20, what="reconnection")

        async def answered() -> bool:
            try:
                await bus.request(bus.subjects.cmd_status, GetStatus(), FleetStatus, timeout=1)
            except BusError:
                return False
            return True

        await wait_until(answered, timeout=20, what="status after restart")


def _start(service: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", f"services.{service}"],
        cwd=ROOT, env=os.environ | env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


async def test_all_four_services_register_and_exit_zero_on_sigterm(
    bus: Bus, settings_env: dict[str, str]
) -> None:
    """Each service process answers `$SRV.PING`, and SIGTERM makes it drain and exit 0."""
    procs = {name: _start(name, settings_env) for name in SERVICES}
    try:
        async def names() -> set[str]:
            inbox = bus.nc.new_inbox()
            sub = await bus.nc.subscribe(inbox)
            await bus.nc.publish("$SRV.PING", b"", reply=inbox)
            seen: set[str] = set()
            try:
                while True:
                    msg = await sub.next_msg(timeout=0.3)
                    seen.add(json.loads(msg.data)["name"])
            except Exception:
                pass
            await sub.unsubscribe()
            return seen if seen >= set(SERVICES) else set()

        await wait_until(names, timeout=30, what="all four services on $SRV.PING")
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        codes = {name: await asyncio.to_thread(proc.wait, 20) for name, proc in procs.items()}
    assert codes == dict.fromkeys(SERVICES, 0), {n: p.stdout.read()[-800:] for n, p in procs.items() if p.stdout}


def test_bad_setting_exits_2_naming_the_variable(settings_env: dict[str, str]) -> None:
    """A service started with a bad QUICFLEET_ variable exits 2 and names it."""
    proc = subprocess.run(
        [sys.executable, "-m", "services.metrics"], check=False, cwd=ROOT, capture_output=True, timeout=30,
        env=os.environ | settings_env | {"QUICFLEET_LOG_LEVEL": "shout"},
    )
    assert proc.returncode == 2
    assert b"QUICFLEET_LOG_LEVEL" in proc.stderr


async def test_gather_collects_every_replica_reply(bus: Bus, settings_env: dict[str, str]) -> None:
    """A scatter-gather request returns one result per answering replica within the window."""
    async with scaler_bootstrap(ScalerSettings()), scaler_bootstrap(ScalerSettings()):
        # both replicas share the micro queue group, so one answers: gather sees exactly one reply
        results = await bus.gather(bus.subjects.cmd_status, GetStatus(), FleetStatus, window=0.5)
    assert len(results) == 1
    assert results[0].desired == 0


async def test_gather_with_no_responders_is_empty_and_quiet(bus: Bus) -> None:
    """A scatter-gather nobody answers returns no results and logs no bad reply."""
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        results = await bus.gather(bus.subjects.prov_list, GetStatus(), FleetStatus, window=0.5)
    assert results == []
    assert not [entry for entry in logs if entry["event"] == "bus.gather_bad_reply"]
