"""B6: with `quicfleet up`'s generated users, every service works under its own and nothing else is allowed.

A real nats-server on loopback runs the config `ops.natsauth` writes; the four real services run
under their own users (the provisioner on libvirt's test driver, readiness over real HTTP/3), and
the operator user drives them as the CLI does. Then every user tries what it must not: wrong
passwords, the balancer sending provisioner commands, subscriptions to `_INBOX.>` and to another
user's inbox, and commands sent by a service that does not own them.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from structlog.testing import capture_logs

from ops.cli.health import SERVICES, collect_pongs, missing
from ops.cli.login import leave
from ops.natsauth import OPERATOR, ROLES, SERVICE_ROLES, Auth, inbox_prefix, prepare
from ops.natsserver import NatsServer
from services.balancer.bootstrap import bootstrap as balancer_bootstrap
from services.balancer.service import BalancerService
from services.balancer.settings import BalancerSettings
from services.metrics.bootstrap import bootstrap as metrics_bootstrap
from services.metrics.settings import MetricsSettings
from services.scaler.bootstrap import bootstrap as scaler_bootstrap
from services.scaler.settings import ScalerSettings
from shared.bus import Bus, connect_options, encode
from shared.contract.commands import DrainVm, GetStatus, ScaleFleet
from shared.contract.events import VmState, VmStateChanged
from shared.contract.provisioning import CreateVm
from shared.contract.status import DesiredState, FleetStatus
from shared.contract.subjects import Subjects
from shared.settings import ServiceSettings
from tests.integration.cli.support import cli
from tests.integration.provisioner.conftest import world
from tests.support import Collector, wait_until
from tests.support.chaos import Row, record
from tests.support.h3server import H3Backend

pytestmark = pytest.mark.chaos
__all__ = ["world"]


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[NatsServer, Auth]]:
    """A nats-server running the generated users (bcrypt hashes, per-role permissions)."""
    auth = prepare(tmp_path / "nats-auth", Subjects())
    (tmp_path / "nats").mkdir()
    server = NatsServer(tmp_path / "nats", extra=auth.server_block)
    server.start()
    yield server, auth
    server.stop()


def login(auth: Auth, role: str) -> dict[str, Any]:
    """Settings keyword arguments that log in as `role`."""
    env = auth.env(role)
    return {"nats_user": env["QUICFLEET_NATS_USER"], "nats_password_file": Path(env["QUICFLEET_NATS_PASSWORD_FILE"]),
            "nats_inbox_prefix": env["QUICFLEET_NATS_INBOX_PREFIX"]}


class Client:
    """A raw connection as one user, keeping the server's errors (permission violations) it receives."""

    def __init__(self, nc: NATS, errors: list[str]) -> None:
        self.nc = nc
        self.errors = errors
        self.bus = Bus(nc, Subjects())

    async def denied(self, subject: str, what: str = "publish") -> None:
        """Wait (with a deadline) for the server's permissions violation naming `subject`."""
        needle = f"permissions violation for {what}"
        await wait_until(lambda: any(needle in e and subject.lower() in e for e in self.errors), 5,
                         what=f"a {what} violation on {subject}")


@pytest.fixture
async def clients(secured: tuple[NatsServer, Auth]) -> AsyncIterator[dict[str, Client]]:
    """One raw client per role, closed after the test."""
    server, auth = secured
    opened: dict[str, Client] = {}
    for role in ROLES:
        opened[role] = await _connect(ServiceSettings(nats_url=server.url, **login(auth, role)))
    yield opened
    for client in opened.values():
        await client.nc.close()


async def _connect(settings: ServiceSettings) -> Client:
    errors: list[str] = []

    async def keep(error: Exception) -> None:
        errors.append(str(error).lower())

    options = connect_options(settings, "b6") | {"allow_reconnect": False, "error_cb": keep}
    return Client(await nats.connect(**options), errors)


async def _ready_vms(operator: Bus, count: int) -> FleetStatus | None:
    status = await operator.request(operator.subjects.cmd_status, GetStatus(), FleetStatus)
    ready = [vm for vm in status.vms if vm.state is VmState.READY]
    loaded = status.load is not None and status.load.balancers >= 1
    return status if len(ready) == count and status.balancers and loaded else None


async def _knows(service: BalancerService, vm: str) -> bool:
    return service.router is not None and service.router.table.get(vm) is not None


async def test_every_service_works_under_its_own_user_and_every_forbidden_attempt_is_refused(
    secured: tuple[NatsServer, Auth], clients: dict[str, Client], world: Any, tmp_path: Path,
) -> None:
    """Under the generated users the fleet scales to a ready VM (operator -> scaler -> provisioner on test:///default,
    balancer and metrics reporting), while wrong logins, provisioner commands from the balancer, `_INBOX.>`
    subscriptions and commands from the wrong service are refused or denied and change nothing."""
    server, auth = secured
    with capture_logs() as logs:
        attempts = await _run_fleet_and_attack(server, auth, clients, world, tmp_path)
    refused = [e for e in logs if "violation" in str(e.get("error", "")).lower()]
    assert refused == [], "a service's own traffic was denied: the table misses a subject it uses"
    record(Row(scenario="B6", title="NATS authorisation", inputs=attempts, invariants={"I4": "pass"},
               figures=f"{len(ROLES)} users; {attempts} wrong logins and forbidden publishes/subscriptions, "
                       "all refused or denied; 1 VM made through the allowed path only"))


async def _run_fleet_and_attack(
    server: NatsServer, auth: Auth, clients: dict[str, Client], world: Any, tmp_path: Path
) -> int:
    """Start the four services under their users, scale to one VM, then try every forbidden thing."""
    operator = clients[OPERATOR].bus
    async with AsyncExitStack() as stack:
        backend = await stack.enter_async_context(H3Backend(tmp_path))
        await stack.enter_async_context(_provisioner(world, server, auth, backend.address))
        scaler = await stack.enter_async_context(scaler_bootstrap(ScalerSettings(
            nats_url=server.url, scaler_id="s1", lease_ttl_s=2, **login(auth, "scaler"))))
        balancer = await stack.enter_async_context(_balancer(server, auth, tmp_path / "b1"))
        await stack.enter_async_context(metrics_bootstrap(MetricsSettings(
            nats_url=server.url, metrics_port=0, metrics_host="127.0.0.1", **login(auth, "metrics"))))
        await wait_until(lambda: scaler.leading, 20, what="the scaler leading (KV lease under its user)")
        watched = {subject: Collector() for subject in (operator.subjects.vm_all, operator.subjects.load)}
        for subject, collector in watched.items():  # what `quicfleet watch` subscribes to
            await operator.nc.subscribe(subject, cb=collector.__call__)
        await operator.request(operator.subjects.cmd_scale, ScaleFleet(replicas=1), DesiredState)
        status = await wait_until(lambda: _ready_vms(operator, 1), 60, what="one ready VM, balancer and load")
        for collector in watched.values():
            await collector.wait_for(lambda _msg: True)
        vm = status.vms[0].name
        await wait_until(lambda: _knows(balancer, vm), 10, what="the balancer routing to the VM")
        late = await stack.enter_async_context(_balancer(server, auth, tmp_path / "b2"))
        await wait_until(lambda: _knows(late, vm), 10, what="a new balancer listing the VM from the provisioner")
        attempts = await _wrong_logins(server, auth) + await _forbidden(clients, world.host, vm)
        after = await operator.request(operator.subjects.cmd_status, GetStatus(), FleetStatus)
        assert after.desired == 1 and [v.name for v in after.vms] == [vm], after
        assert len(world.ours()) == 1, "no forbidden command made or destroyed a VM"
        assert not (await _draining(balancer, vm)), "no forged drain reached the balancer"
        assert all(c.nc.is_connected for c in clients.values()), "a denial does not cost a user its connection"
        assert scaler.bus.connected and balancer.bus.connected and late.bus.connected
        await wait_until(lambda: _all_answer(operator), 10, what="every service answering $SRV.PING (I4)")
    return attempts


async def _all_answer(operator: Bus) -> bool:
    pongs = await collect_pongs(operator.nc, list(SERVICES), 1.0)
    return not missing(list(SERVICES), pongs)


async def _draining(service: BalancerService, vm: str) -> bool:
    backend = service.router.table.get(vm) if service.router is not None else None
    return bool(backend is not None and backend.draining)


def _provisioner(world: Any, server: NatsServer, auth: Auth, address: str) -> Any:
    from services.provisioner.bootstrap import bootstrap as provisioner_bootstrap

    return provisioner_bootstrap(world.settings(server, static_addresses=address, **login(auth, "provisioner")))


def _balancer(server: NatsServer, auth: Auth, state: Path) -> Any:
    return balancer_bootstrap(BalancerSettings(
        nats_url=server.url, listen_port=0, balancer_state_dir=state, balancer_list_window_s=0.5,
        balancer_slow_start_s=0, health_interval_s=60, health_path="/healthz", balancer_report_interval_s=0.5,
        **login(auth, "balancer")))


async def _wrong_logins(server: NatsServer, auth: Auth) -> int:
    """Every user with a wrong password, an unknown user, and no login at all: each connect refused."""
    tries: list[dict[str, Any]] = [
        {"nats_user": role, "nats_password": "not-" + role, "nats_inbox_prefix": inbox_prefix(role)} for role in ROLES
    ]
    tries += [{"nats_user": "intruder", "nats_password": "x"}, {}]
    for values in tries:
        with pytest.raises(nats.errors.Error, match=r"(?i)authorization violation"):
            client = await _connect(ServiceSettings(nats_url=server.url, **values))
            await client.nc.close()
    return len(tries)


async def _forbidden(clients: dict[str, Client], host: str, vm: str) -> int:
    """Publishes and subscriptions outside each user's permissions; each must come back as a violation."""
    s = Subjects()
    create = encode(CreateVm(request_id="b6-forged", epoch=99))
    publishes = [
        ("balancer", s.prov_create, create), ("balancer", s.prov_create_on(host), create),
        ("balancer", s.prov_destroy(host), b"{}"), ("metrics", s.cmd_scale, encode(ScaleFleet(replicas=5))),
        ("provisioner", s.cmd_scale, encode(ScaleFleet(replicas=5))), ("balancer", s.cmd_drain, encode(DrainVm(vm=vm))),
        ("metrics", s.prov_drain(host), b"{}"), ("balancer", s.scaler_state, b"{}"),
        ("metrics", s.vm(VmState.FAILED), encode(VmStateChanged(vm=vm, state=VmState.FAILED))),
        ("provisioner", s.prov_list, b"{}"), (OPERATOR, s.prov_create, create),
        (OPERATOR, "$KV.quicfleet_scaler.desired", b"{}"),
        ("balancer", "$JS.API.STREAM.DELETE.KV_quicfleet_scaler", b""),
        ("metrics", f"{inbox_prefix('scaler')}.forged", b""),
    ]
    for role, subject, data in publishes:
        await clients[role].nc.publish(subject, data, reply=clients[role].nc.new_inbox())
        await clients[role].denied(subject)
    subscriptions = [(role, "_INBOX.>") for role in ROLES] + [
        ("balancer", f"{inbox_prefix('scaler')}.>"), (OPERATOR, ">"), ("metrics", s.prov_create),
        ("balancer", s.cmd_scale),
    ]
    for role, subject in subscriptions:
        await clients[role].nc.subscribe(subject)
        await clients[role].denied(subject, "subscription")
    await asyncio.gather(*(clients[role].bus.barrier() for role in SERVICE_ROLES))
    return len(publishes) + len(subscriptions)


async def test_the_cli_logs_in_as_the_operator_by_itself_and_every_command_goes_through(
    secured: tuple[NatsServer, Auth], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With only the pointer `up` leaves, the `quicfleet` subprocess logs in as the operator and its status, scale,
    policy, drain, watch and health all pass the permissions (a drain of an unknown VM reaches the scaler's refusal)."""
    server, auth = secured
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    for name in ("QUICFLEET_NATS_USER", "QUICFLEET_NATS_PASSWORD", "QUICFLEET_NATS_TOKEN", "QUICFLEET_NATS_CREDS"):
        monkeypatch.delenv(name, raising=False)
    leave([server.port], auth.directory, os.environ)
    async with scaler_bootstrap(ScalerSettings(nats_url=server.url, scaler_id="s1", lease_ttl_s=2,
                                               **login(auth, "scaler"))) as scaler:
        await wait_until(lambda: scaler.leading, 20, what="the scaler leading")
        results = {
            "status": await cli(server.url, "--json", "status"),
            "scale": await cli(server.url, "scale", "2", "--no-wait"),
            "policy": await cli(server.url, "policy", "set", "target=7"),
            "show": await cli(server.url, "--json", "policy", "show"),
            "watch": await cli(server.url, "watch", "--for", "0.5"),
            "health": await cli(server.url, "health", "nats", "scaler", "--window", "5"),
        }
        drain = await cli(server.url, "drain", "qf-nosuchvm")
    assert {name: r.code for name, r in results.items()} == dict.fromkeys(results, 0), results
    assert json.loads(results["show"].out)["target"] == 7
    assert drain.code == 1 and "not_found" in drain.err, drain
