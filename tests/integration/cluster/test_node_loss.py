"""A NATS node killed (-9) while the fleet scales 1 -> 3: commands come back, the lease stays fenced,
every create runs once, desired size and policy survive, and the balancer keeps serving.

Each test prints what it measured (`pytest tests/integration/cluster -rP` shows it): seconds from
the kill until a status command is answered, a scale command (a KV write) is answered, every
service is connected again, and the scaler's lease is written again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import niquests
from nats.errors import Error as NatsError
from nats.js.kv import KeyValue

from ops.natsserver import NatsCluster
from services.scaler.lease import LEASE_KEY, LeaseRecord
from shared.bus import Bus
from shared.contract.commands import GetStatus, PolicyPatch, ScaleFleet
from shared.contract.events import VmState, VmStateChanged
from shared.contract.policy import ScalingPolicy
from shared.contract.status import DesiredState, FleetStatus
from shared.errors import BusError
from tests.integration.cluster.fleet import Fleet, free_udp_port, service_envs
from tests.integration.cluster.prober import Prober
from tests.support import Collector, wait_until
from tests.support.h3server import H3Backend

BUCKET = "quicfleet_scaler"
POLICY = PolicyPatch(max_replicas=6, cooldown_s=7)


@dataclass(frozen=True)
class Loss:
    """What one node loss cost, in seconds from the kill."""

    victim: str
    roles: tuple[str, ...]
    status_s: float
    scale_s: float
    reconnected_s: float
    lease_s: float
    holders: tuple[tuple[int, str], ...]
    gets: int

    def line(self) -> str:
        return (f"killed {self.victim} ({', '.join(self.roles) or 'a follower'}): status answered after "
                f"{self.status_s:.2f} s, scale (KV write) after {self.scale_s:.2f} s, every service reconnected "
                f"after {self.reconnected_s:.2f} s, lease written after {self.lease_s:.2f} s; lease (epoch, holder) "
                f"{list(self.holders)}; {self.gets} GETs through the balancer, none failed")


@dataclass
class LeaseWatch:
    """The lease record as the test client reads it every 0.1 s: (time, revision, record)."""

    kv: KeyValue
    seen: list[tuple[float, int, LeaseRecord]] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            with contextlib.suppress(NatsError, TimeoutError):  # failing over: the next read tries again
                entry = await self.kv.get(LEASE_KEY)
                record = LeaseRecord.model_validate_json(entry.value or b"")
                self.seen.append((time.monotonic(), entry.revision or 0, record))
            await asyncio.sleep(0.1)

    def written_after(self, when: datetime) -> float | None:
        """When a record its writer made after `when` (its own clock: the same machine) was first read."""
        return next((t for t, _, record in self.seen if record.renewed_at > when), None)


async def _ask(bus: Bus, subject: str, command: Any, result: type[Any], timeout: float) -> Any:
    """A command's result, or None while nobody answers (NATS or JetStream still failing over)."""
    try:
        return await bus.request(subject, command, result, timeout=timeout)
    except (BusError, NatsError, TimeoutError):
        return None


async def _ready(bus: Bus, count: int) -> FleetStatus | None:
    status = await _ask(bus, bus.subjects.cmd_status, GetStatus(), FleetStatus, 2)
    if status is None:
        return None
    ready = [vm for vm in status.vms if vm.state is VmState.READY]
    return status if len(ready) == count == len(status.vms) else None


async def _seconds_until(start: float, condition: Callable[[], Any], what: str) -> float:
    await wait_until(condition, 60, 0.05, what)
    return time.monotonic() - start


@asynccontextmanager
async def _fleet(cluster: NatsCluster, tmp_path: Path) -> AsyncIterator[tuple[Fleet, str]]:
    """The services as processes on `cluster`, three HTTP/3 backends as the VMs' addresses; the balancer's URL."""
    async with AsyncExitStack() as stack:
        backends = [await stack.enter_async_context(H3Backend(tmp_path)) for _ in range(3)]
        port = free_udp_port()
        fleet = Fleet(cluster, tmp_path, service_envs(cluster, ",".join(b.address for b in backends), tmp_path, port))
        fleet.start()
        try:
            await wait_until(fleet.started, 60, 0.2, "every service started")
            yield fleet, f"https://127.0.0.1:{port}/"
        finally:
            codes = await asyncio.to_thread(fleet.stop)
        assert set(codes.values()) == {0}, (codes, fleet.tail())


async def _scale_through_a_node_loss(
    cluster: NatsCluster, bus: Bus, fleet: Fleet, url: str, pick: Callable[[], Awaitable[str]]
) -> Loss:
    """Scale 1 -> 3, kill -9 the node `pick` names as soon as a create is on its way, and wait for 3 ready VMs."""
    s = bus.subjects
    await wait_until(lambda: _ask(bus, s.cmd_policy, POLICY, ScalingPolicy, 5), 30, 0.2, "the policy stored")
    await bus.request(s.cmd_scale, ScaleFleet(replicas=1), DesiredState)
    before = await wait_until(lambda: _ready(bus, 1), 30, 0.2, "one ready VM")
    prober = Prober(url)
    await wait_until(lambda: asyncio.to_thread(_one_get, url), 30, 0.2, "the balancer serving the first VM")
    kv = await bus.nc.jetstream(timeout=0.5).key_value(BUCKET)
    lease = LeaseWatch(kv)
    watcher = asyncio.create_task(lease.run())
    requested = Collector()
    await bus.nc.subscribe(s.vm(VmState.REQUESTED), cb=requested.__call__)
    prober.start()
    try:
        await wait_until(lambda: lease.seen, 10, 0.05, "the lease read")
        clients = fleet.clients_connected()
        await bus.request(s.cmd_scale, ScaleFleet(replicas=3), DesiredState)
        await requested.wait_for(lambda _msg: True, timeout=10)
        victim = await pick()
        roles = await _roles(cluster, bus, fleet, victim, before.leader)
        killed, killed_at = time.monotonic(), datetime.now(UTC)
        await asyncio.to_thread(cluster.node(victim).kill)
        status_s, scale_s, reconnected_s, lease_s = await asyncio.gather(
            _seconds_until(killed, lambda: _ask(bus, s.cmd_status, GetStatus(), FleetStatus, 0.5), "a status answer"),
            _seconds_until(killed, lambda: _ask(bus, s.cmd_scale, ScaleFleet(replicas=3), DesiredState, 1),
                           "a scale answer"),
            _seconds_until(killed, lambda: asyncio.to_thread(lambda: fleet.clients_connected() >= clients),
                           f"every service back on a live node ({sorted(clients)})"),
            _seconds_until(killed, lambda: lease.written_after(killed_at), "the lease written again"),
        )
        final = await wait_until(lambda: _ready(bus, 3), 60, 0.2, "three ready VMs")
    finally:
        # off the loop: the backends the prober's last GET may be waiting on are served by this loop
        await asyncio.to_thread(prober.stop)
        watcher.cancel()
    _check(fleet, final, lease, requested, prober)
    holders = tuple(sorted({(record.epoch, record.holder or "-") for _, _, record in lease.seen}))
    return Loss(victim, roles, status_s, scale_s, reconnected_s, lease_s, holders, prober.ok)


async def _roles(cluster: NatsCluster, bus: Bus, fleet: Fleet, victim: str, leader: str | None) -> tuple[str, ...]:
    """What the victim is to the fleet: JetStream meta leader, the scaler bucket's stream leader, the leader's node."""
    roles = []
    if (meta := cluster.meta_leader()) is not None and meta.name == victim:
        roles.append("JetStream meta leader")
    info = await bus.nc.jetstream().stream_info(f"KV_{BUCKET}")
    if info.cluster is not None and info.cluster.leader == victim:
        roles.append(f"KV_{BUCKET} stream leader")
    if leader and fleet.node_of(f"quicfleet-scaler-{leader}") == victim:
        roles.append(f"the leading scaler's ({leader}) node")
    return tuple(roles)


def _one_get(url: str) -> bool:
    """One HTTP/3 GET through the balancer, answered 200."""
    with warnings.catch_warnings(), niquests.Session(disable_http1=True, disable_http2=True) as session:
        warnings.simplefilter("ignore")  # the development certificate is not verified
        try:
            return bool(session.get(url, verify=False, timeout=2).status_code == 200)
        except niquests.exceptions.RequestException:
            return False


def _check(fleet: Fleet, final: FleetStatus, lease: LeaseWatch, requested: Collector, prober: Prober) -> None:
    """Desired size and policy intact, epochs only up, each create once, no destroy, every GET answered."""
    assert final.desired == 3
    assert (final.policy.max_replicas, final.policy.cooldown_s) == (6, 7)
    acquired = [entry["epoch"] for name in ("scaler-s1", "scaler-s2") for entry in fleet.events(name, "lease.acquired")]
    assert len(acquired) == len(set(acquired)), f"an epoch was taken twice: {acquired}"
    read = [record.epoch for _, _, record in lease.seen]
    assert read == sorted(read), f"the lease epoch went down: {read}"
    holders = {(record.epoch, record.holder) for _, _, record in lease.seen if record.holder}
    assert len(holders) == len({epoch for epoch, _ in holders}), f"two holders in one epoch: {holders}"
    states = fleet.events("provisioner", "vm.state")
    made = [(entry["vm"], entry.get("vm_request")) for entry in states if entry["state"] == VmState.REQUESTED.value]
    assert len(made) == len({vm for vm, _ in made}) == len({request for _, request in made}) == 3, f"creates: {made}"
    assert not [entry for entry in states if entry["state"] == VmState.DESTROYED.value]
    ids = [VmStateChanged.model_validate_json(msg.data).request_id for msg in requested.messages]
    assert len(ids) == len(set(ids)), f"a request id was requested twice: {ids}"
    assert prober.ok > 0 and prober.failed == [], prober.failed[:5]


async def test_killing_the_buckets_stream_leader_while_scaling_keeps_the_fleet_and_its_state(
    cluster: NatsCluster, cluster_bus: Bus, tmp_path: Path
) -> None:
    """kill -9 of the node leading the scaler bucket's stream mid scale-up: 3 VMs, every create run once."""
    async with _fleet(cluster, tmp_path) as (fleet, url):

        async def stream_leader() -> str:
            info = await cluster_bus.nc.jetstream().stream_info(f"KV_{BUCKET}")
            assert info.cluster is not None and info.cluster.leader is not None
            return info.cluster.leader

        loss = await _scale_through_a_node_loss(cluster, cluster_bus, fleet, url, stream_leader)
        assert f"KV_{BUCKET} stream leader" in loss.roles
    print(loss.line())


async def test_killing_the_jetstream_meta_leader_while_scaling_keeps_the_fleet_and_its_state(
    cluster: NatsCluster, cluster_bus: Bus, tmp_path: Path
) -> None:
    """kill -9 of the JetStream meta leader mid scale-up: the fleet reaches 3 VMs, every create run once."""
    async with _fleet(cluster, tmp_path) as (fleet, url):

        async def meta_leader() -> str:
            leader = cluster.meta_leader()
            assert leader is not None
            return leader.name

        loss = await _scale_through_a_node_loss(cluster, cluster_bus, fleet, url, meta_leader)
        assert cluster.wait_ready().name != loss.victim
    print(loss.line())
