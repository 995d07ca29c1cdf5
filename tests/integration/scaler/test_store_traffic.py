"""What one public command costs in KV traffic, counted on the real nats-server's subjects."""

from __future__ import annotations

import json

from nats.aio.msg import Msg

from services.scaler.bootstrap import bootstrap
from services.scaler.settings import ScalerSettings
from services.scaler.store import DESIRED_KEY
from shared.bus import Bus
from shared.contract.commands import PolicyPatch, ScaleFleet
from shared.contract.policy import ScalingPolicy
from shared.contract.status import DesiredState
from tests.integration.scaler.fakes import FakeProvisioner
from tests.support import Collector, wait_until


class KvTraffic:
    """Reads and writes of one key, as every client sends them through the server.

    A read is a JetStream get of the key (`$JS.API.DIRECT.GET...` naming it, or a `STREAM.MSG.GET` asking
    for it); a write is a publish on the key's subject (`$KV.<bucket>.<key>`, revision-checked or not).
    """

    def __init__(self, bus: Bus, bucket: str, key: str) -> None:
        self.bus, self.bucket, self.key = bus, bucket, key
        self.reads: list[str] = []
        self.writes: list[str] = []

    async def start(self) -> None:
        stream, nc = f"KV_{self.bucket}", self.bus.nc
        await nc.subscribe(f"$JS.API.DIRECT.GET.{stream}.>", cb=self._direct)
        await nc.subscribe(f"$JS.API.DIRECT.GET.{stream}", cb=self._by_body)
        await nc.subscribe(f"$JS.API.STREAM.MSG.GET.{stream}", cb=self._by_body)
        await nc.subscribe(f"$KV.{self.bucket}.{self.key}", cb=self._write)
        await nc.flush()

    def reset(self) -> None:
        self.reads.clear()
        self.writes.clear()

    async def _direct(self, msg: Msg) -> None:
        if msg.subject.endswith(f".$KV.{self.bucket}.{self.key}"):
            self.reads.append(msg.subject)

    async def _by_body(self, msg: Msg) -> None:
        body = json.loads(msg.data or b"{}")
        if body.get("last_by_subj") == f"$KV.{self.bucket}.{self.key}":
            self.reads.append(msg.subject)

    async def _write(self, msg: Msg) -> None:
        self.writes.append(msg.subject)


async def test_a_scale_command_costs_its_replica_one_kv_write_and_no_read(
    bus: Bus, settings_env: dict[str, str]
) -> None:
    """One `fleet.cmd.scale` makes one revision-checked write of `desired` and no read of it: not in the
    handler, not for its own `fleet.scaler.state` echo, not in the evaluations it and the new VMs wake."""
    settings = ScalerSettings(scaler_id="s1", lease_ttl_s=2.0)
    traffic = KvTraffic(bus, settings.scaler_bucket, DESIRED_KEY)
    await traffic.start()
    decisions = await _collect(bus, bus.subjects.scaler_decision)
    states = await _collect(bus, bus.subjects.scaler_state)
    async with FakeProvisioner(bus) as prov, bootstrap(settings) as one:
        await wait_until(lambda: one.leading, 20, what="leadership")
        # A long evaluation interval keeps the periodic re-read (the safety net) out of the window counted.
        await bus.request(bus.subjects.cmd_policy, PolicyPatch(evaluation_interval_s=300), ScalingPolicy)
        await wait_until(lambda: len(prov.vms) == 1, 20, what="the first VM (the policy's minimum)")
        traffic.reset()
        reply = await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=3), DesiredState)
        assert reply.desired == 3
        await decisions.wait_for(lambda m: json.loads(m.data)["desired"] == 3 and b"creating" in m.data)
        await wait_until(lambda: len(prov.vms) == 3, 20, what="the two new VMs")
        assert (len(traffic.reads), len(traffic.writes)) == (0, 1), (traffic.reads, traffic.writes)
        # Barrier: another replica's announcement, on the same subscription as the echo, is read once; so the
        # echo was handled before it, without a read.
        await states.wait_for(lambda m: json.loads(m.data)["desired"] == 3)
        await bus.publish(bus.subjects.scaler_state, DesiredState(desired=3))
        await wait_until(lambda: traffic.reads, 10, what="the read of another replica's change")
    assert len(traffic.reads) == 1 and len(traffic.writes) == 1


async def _collect(bus: Bus, subject: str) -> Collector:
    """A Collector subscribed to `subject`."""
    collector = Collector()

    async def on_message(msg: Msg) -> None:
        await collector(msg)

    await bus.nc.subscribe(subject, cb=on_message)
    return collector
