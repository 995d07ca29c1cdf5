"""The scaler on a real nats-server with a fake provisioner and balancer answering on the bus."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from services.scaler.bootstrap import bootstrap
from services.scaler.service import ScalerService
from services.scaler.settings import ScalerSettings
from shared.bus import Bus
from shared.contract.commands import DrainVm, GetStatus, PolicyPatch, ScaleFleet
from shared.contract.events import ScalingDecided, VmState, VmStateChanged
from shared.contract.load import FleetLoaded, VmLoad
from shared.contract.policy import ScalingPolicy
from shared.contract.status import DesiredState, FleetStatus
from tests.integration.scaler.fakes import FakeBalancer, FakeProvisioner
from tests.support import Collector, wait_until

TTL = 2.0


@asynccontextmanager
async def scaler(name: str) -> AsyncIterator[ScalerService]:
    async with bootstrap(ScalerSettings(scaler_id=name, lease_ttl_s=TTL)) as service:
        await wait_until(lambda: service._lease is not None and service.lease.holder is not None, 20, what="a leader")
        yield service


async def _status(bus: Bus) -> FleetStatus:
    return await bus.request(bus.subjects.cmd_status, GetStatus(), FleetStatus)


async def test_scale_one_to_three_by_command_sends_creates(bus: Bus, settings_env: dict[str, str]) -> None:
    """`fleet.cmd.scale` 1 then 3 makes the leader send three creates in its epoch, and status shows three VMs."""
    decisions = await _collect(bus, bus.subjects.scaler_decision)
    async with FakeProvisioner(bus) as prov, scaler("s1") as one:
        await wait_until(lambda: one.leading, 20, what="leadership")
        await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=1), DesiredState)
        await wait_until(lambda: len(prov.vms) == 1, 20, what="first VM")
        reply = await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=3), DesiredState)
        assert reply.desired == 3 and reply.hold_until is not None

        async def three_ready() -> bool:
            status = await _status(bus)
            return len([v for v in status.vms if v.state is VmState.READY]) == 3

        await wait_until(three_ready, 20, what="three ready VMs in status")
    assert len(prov.creates) == 3 and {c.epoch for c in prov.creates} == {1}
    assert len({c.request_id for c in prov.creates}) == 3
    event = await decisions.wait_for(lambda m: json.loads(m.data)["desired"] == 3 and b"creating" in m.data)
    assert ScalingDecided.model_validate_json(event.data).leader == "s1"


async def test_two_replicas_only_the_leader_acts(bus: Bus, settings_env: dict[str, str]) -> None:
    """With two replicas exactly one leads, both report it, and every create comes from it (three, not six);
    both statuses say why the fleet holds or moves (the follower from the lease the leader renews)."""
    async with FakeProvisioner(bus) as prov, scaler("s1") as one, scaler("s2") as two:
        await wait_until(lambda: one.leading or two.leading, 20, what="a leader")
        leader, follower = (one, two) if one.leading else (two, one)
        await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=3), DesiredState)
        def ready(s: ScalerService) -> bool:
            return len([v for v in s.fleet.vms.values() if v.state is VmState.READY]) == 3

        await wait_until(lambda: ready(leader) and ready(follower), 20, what="both views at three ready VMs")
        assert not follower.leading and follower.lease.holder == leader.settings.scaler_id
        await wait_until(lambda: follower.lease.reason is not None, 5 * TTL, what="the reason relayed by the lease")
        views = [await s.status(GetStatus()) for s in (leader, follower)]
        assert {(v.leader, v.epoch, v.desired) for v in views} == {(leader.settings.scaler_id, 1, 3)}
        assert views[0].reason and views[1].reason  # the follower relays the reason the leader renews its lease with
    assert len(prov.creates) == 3
    assert all(c.request_id.startswith(f"{leader.settings.scaler_id}-e1-") for c in prov.creates)


async def test_leader_killed_follower_takes_over_within_a_lease_period(bus: Bus, settings_env: dict[str, str]) -> None:
    """When the leader dies without a word, the follower leads within a lease period, in a new epoch."""
    async with FakeProvisioner(bus) as prov, scaler("s1") as one, scaler("s2") as two:
        await wait_until(lambda: one.leading or two.leading, 20, what="a leader")
        leader, follower = (one, two) if one.leading else (two, one)
        await leader.cancel_tasks()
        await leader.bus.nc.close()
        killed = time.monotonic()
        await wait_until(lambda: follower.leading, 10 * TTL, what="takeover")
        took = time.monotonic() - killed
        assert follower.lease.epoch == 2
        await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=2), DesiredState)
        await wait_until(lambda: len(prov.vms) == 2, 20, what="creates from the new leader")
    assert took <= TTL * 1.5, took
    assert {c.epoch for c in prov.creates} == {2}


async def _two_warm_vms(bus: Bus, prov: FakeProvisioner, follower: ScalerService) -> None:
    """Two VMs, ready and warm at once (warmup 0), in the follower's view: the load they carry then counts."""
    await bus.request(bus.subjects.cmd_policy, PolicyPatch(warmup_s=0), ScalingPolicy)
    await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=2), DesiredState)
    await wait_until(lambda: len(prov.vms) == 2 and all(r.state is VmState.READY for r in prov.vms.values())
                     and len(follower.fleet.vms) == 2, 20, what="two ready VMs in the follower's view")


def _snapshot(prov: FakeProvisioner, outstanding: float, source: str | None = None, reports: int = 0) -> FleetLoaded:
    """A `fleet.load` snapshot spreading `outstanding` evenly over the fake provisioner's VMs."""
    views = [VmLoad(vm=name, outstanding=outstanding / len(prov.vms)) for name in prov.vms]
    return FleetLoaded(window_s=1, outstanding=outstanding, vms=views, source=source, reports=reports)


def _history(replica: ScalerService) -> list[float]:
    """The demand values in a replica's load history, oldest first."""
    return [value for _, value in replica.fleet.memory.observations]


async def test_follower_keeps_the_load_history_and_leads_with_it(bus: Bus, settings_env: dict[str, str]) -> None:
    """A follower records each load snapshot it sees, and after a takeover its autoscaler starts from that history."""
    async with FakeProvisioner(bus) as prov, scaler("s1") as one, scaler("s2") as two:
        await wait_until(lambda: one.leading or two.leading, 20, what="a leader")
        leader, follower = (one, two) if one.leading else (two, one)
        await _two_warm_vms(bus, prov, follower)
        for i in range(5):
            views = [VmLoad(vm=name, outstanding=1.0 + i) for name in prov.vms]
            await bus.publish(bus.subjects.load, FleetLoaded(window_s=1, outstanding=2.0 + 2 * i, vms=views))
            def has(n: int = i + 1) -> bool:
                return len(follower.fleet.memory.observations) >= n

            await wait_until(has, 10, what="the snapshot witnessed")
        witnessed = follower.fleet.memory.observations
        await leader.cancel_tasks()
        await leader.bus.nc.close()
        await wait_until(lambda: follower.leading, 10 * TTL, what="takeover")
        await wait_until(lambda: follower.fleet.epoch == 2, 10, what="the new term")
    assert [v for _, v in witnessed] == [2.0, 4.0, 6.0, 8.0, 10.0]
    assert set(witnessed) <= set(follower.fleet.memory.observations)


async def test_two_metrics_replicas_give_one_load_history(bus: Bus, settings_env: dict[str, str]) -> None:
    """Of two metrics replicas' interleaved snapshots only one's enter the history, until that one falls silent."""
    async with FakeProvisioner(bus) as prov, scaler("s1") as one, scaler("s2") as two:
        await wait_until(lambda: one.leading or two.leading, 20, what="a leader")
        follower = two if one.leading else one
        await _two_warm_vms(bus, prov, follower)

        for i in range(4):  # a, b, a, b, a, b, a: delivered in order, so a's fourth follows every b
            if i:
                await bus.publish(bus.subjects.load, _snapshot(prov, 100.0, "metrics-b"))
            await bus.publish(bus.subjects.load, _snapshot(prov, 2.0 + 2 * i, "metrics-a"))

            def witnessed(n: int = i + 1) -> bool:
                return len(_history(follower)) >= n

            await wait_until(witnessed, 10, what="replica a's snapshot witnessed")
        assert _history(follower) == [2.0, 4.0, 6.0, 8.0]

        async def b_taken_up() -> bool:
            await bus.publish(bus.subjects.load, _snapshot(prov, 100.0, "metrics-b"))
            return 100.0 in _history(follower)

        await wait_until(b_taken_up, 20, interval=0.2, what="replica b followed once a is silent")
    assert _history(follower)[:4] == [2.0, 4.0, 6.0, 8.0]


async def test_snapshots_without_a_new_report_add_nothing_to_the_history(
    bus: Bus, settings_env: dict[str, str]
) -> None:
    """Snapshots repeating the last one's report count (metrics faster than the balancers) are no new history point."""
    async with FakeProvisioner(bus) as prov, scaler("s1") as one, scaler("s2") as two:
        await wait_until(lambda: one.leading or two.leading, 20, what="a leader")
        follower = two if one.leading else one
        await _two_warm_vms(bus, prov, follower)

        for reports in (1, 2):  # each count once as news, then three repeats of it
            for repeat in range(4):
                figure = 2.0 * reports + 0.1 * repeat
                await bus.publish(bus.subjects.load, _snapshot(prov, figure, "metrics-a", reports))
        await bus.publish(bus.subjects.load, _snapshot(prov, 6.0, "metrics-a", 3))
        await wait_until(lambda: len(_history(follower)) >= 3, 10, what="the third report's snapshot witnessed")
    assert _history(follower) == [2.0, 4.0, 6.0]


@pytest.mark.parametrize("ticks", range(6))
async def test_cancelled_as_it_wakes_the_control_loop_still_ends(
    bus: Bus, settings_env: dict[str, str], ticks: int
) -> None:
    """A cancel that lands while a wake-up completes ends the loops (Python 3.11's wait_for swallowed it: a hang)."""
    async with scaler("s1") as one:
        await wait_until(lambda: one.leading, 20, what="leadership")
        one._wake.set()
        for _ in range(ticks):
            await asyncio.sleep(0)
        async with asyncio.timeout(10):
            await one.cancel_tasks()


async def test_bad_commands_get_invalid_or_not_found(bus: Bus, settings_env: dict[str, str]) -> None:
    """Inconsistent policies, unknown fields, bad names and unknown VMs are refused with the right code."""
    async with scaler("s1"):
        cases = [
            (bus.subjects.cmd_policy, b'{"min_replicas": 5, "max_replicas": 2}', "invalid"),
            (bus.subjects.cmd_policy, b'{"target": -1}', "invalid"),
            (bus.subjects.cmd_policy, b'{"signal": "vibes"}', "invalid"),
            (bus.subjects.cmd_policy, b'{"hack": true}', "invalid"),
            (bus.subjects.cmd_scale, b'{"replicas": -1}', "invalid"),
            (bus.subjects.cmd_drain, b'{"vm": "../etc"}', "invalid"),
            (bus.subjects.cmd_drain, b'{"vm": "ghost"}', "not_found"),
        ]
        for subject, body, code in cases:
            msg = await bus.nc.request(subject, body, timeout=5)
            reply = json.loads(msg.data)
            assert reply["ok"] is False and reply["error"]["code"] == code, (body, reply)
        policy = await bus.request(bus.subjects.cmd_policy, PolicyPatch(max_replicas=7), ScalingPolicy)
    assert policy.max_replicas == 7


async def test_desired_size_and_policy_survive_a_restart(bus: Bus, settings_env: dict[str, str]) -> None:
    """What commands stored in KV is what a restarted scaler reports."""
    async with scaler("s1"):
        await bus.request(bus.subjects.cmd_policy, PolicyPatch(max_replicas=6, target=3.5), ScalingPolicy)
        await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=4), DesiredState)
    async with scaler("s2"):
        status = await _status(bus)
    assert status.desired == 4 and status.policy.max_replicas == 6 and status.policy.target == 3.5


async def test_drain_command_drains_then_destroys_and_shrinks(bus: Bus, settings_env: dict[str, str]) -> None:
    """`fleet.cmd.drain` sends one `StartDrain` to the VM's provisioner, which announces the drain; the leader
    waits for the balancer, destroys the VM and lowers the size, and never publishes a drain itself."""
    draining = await _collect(bus, bus.subjects.vm(VmState.DRAINING))
    old_drains = await _collect(bus, "fleet.balancer.drain")  # the subject of the two-message drain, now unused
    async with FakeProvisioner(bus) as prov, FakeBalancer(bus) as balancer, scaler("s1") as one:
        await wait_until(lambda: one.leading, 20, what="leadership")
        await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=2), DesiredState)
        await wait_until(lambda: len([v for v in one.fleet.vms.values() if v.state is VmState.READY]) == 2, 20)
        victim = sorted(prov.vms)[1]
        reply = await bus.request(bus.subjects.cmd_drain, DrainVm(vm=victim), DesiredState)
        assert reply.desired == 1 and reply.draining == [victim]
        await wait_until(lambda: [d.vm for d in prov.destroys] == [victim], 20, what="destroy")
        await wait_until(lambda: victim not in one.store.current.draining, 20, what="drain list cleared")
    assert [d.vm for d in balancer.drains] == [victim]
    assert [(d.vm, d.epoch, d.deadline_s) for d in prov.drains] == [(victim, 1, ScalingPolicy().drain_timeout_s)]
    assert len(draining.messages) == 1, "one drain event, the provisioner's"
    event = VmStateChanged.model_validate_json(draining.messages[0].data)
    assert (event.vm, event.host, event.deadline_s, event.request_id) == (victim, "h1", 30, prov.drains[0].request_id)
    assert old_drains.messages == []
    assert len(prov.creates) == 2


async def test_a_drain_the_provisioner_refuses_is_asked_again(
    bus: Bus, settings_env: dict[str, str]
) -> None:
    """A refused `StartDrain` is sent again at a later reconcile (a new request id), and the VM is destroyed
    once the accepted one is announced and the balancer drained it."""
    async with FakeProvisioner(bus, refuse_drains=2) as prov, FakeBalancer(bus) as balancer, scaler("s1") as one:
        await wait_until(lambda: one.leading, 20, what="leadership")
        await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=2), DesiredState)
        await wait_until(lambda: len([v for v in one.fleet.vms.values() if v.state is VmState.READY]) == 2, 20)
        victim = sorted(prov.vms)[1]
        await bus.request(bus.subjects.cmd_drain, DrainVm(vm=victim), DesiredState)
        await wait_until(lambda: [d.vm for d in prov.destroys] == [victim], 20, what="destroy")
        assert len(balancer.drains) == 1 and balancer.drains[0].request_id == prov.drains[2].request_id
    assert [d.vm for d in prov.drains] == [victim] * 3, "two refused, the third taken, none after"
    assert len({d.request_id for d in prov.drains}) == 3


async def test_failing_creates_back_off_instead_of_looping(bus: Bus, settings_env: dict[str, str]) -> None:
    """Creates that get no answer count as failures; the next one waits out the backoff and goes alone."""
    attempts = await _collect(bus, bus.subjects.prov_create)
    clock = [time.time()]
    settings = ScalerSettings(scaler_id="s1", lease_ttl_s=TTL, scaler_request_timeout_s=0.5)
    async with bootstrap(settings, clock=lambda: clock[0]) as one:
        await wait_until(lambda: one.leading, 20, what="leadership")
        await bus.request(bus.subjects.cmd_policy, PolicyPatch(failure_backoff_s=30), ScalingPolicy)
        await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=3), DesiredState)
        await wait_until(lambda: one.fleet.failures.count == 3, 20, what="three failed creates")
        clock[0] += 30 * 4 + 1
        await wait_until(lambda: one.fleet.failures.count == 4, 20, what="the probe create failing too")
    assert len(attempts.messages) == 4


async def test_rising_load_scales_out_and_falling_load_removes_the_idlest_vm_once(
    bus: Bus, settings_env: dict[str, str]
) -> None:
    """Load above target grows the fleet; a fall shrinks it by one, after the window, taking the idlest VM."""
    total = [40.0]

    async def publish_load(prov: FakeProvisioner) -> None:
        while True:
            ready = [name for name, record in prov.vms.items() if record.state is VmState.READY]
            views = [VmLoad(vm=name, outstanding=total[0] / len(ready)) for name in ready]
            await bus.publish(bus.subjects.load, FleetLoaded(window_s=1, outstanding=total[0], vms=views))
            await asyncio.sleep(0.2)

    async with FakeProvisioner(bus) as prov, FakeBalancer(bus) as balancer, scaler("s1") as one:
        await wait_until(lambda: one.leading, 20, what="leadership")
        patch = PolicyPatch(warmup_s=0, manual_hold_s=0, scale_down_stabilization_s=3, scale_down_period_s=600,
                            scale_down_after_up_s=0, scale_down_tolerance=0.1, max_replicas=5)
        await bus.request(bus.subjects.cmd_policy, patch, ScalingPolicy)
        await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=2), DesiredState)
        loader = asyncio.create_task(publish_load(prov))
        try:
            def ready() -> list[str]:
                return [n for n, r in prov.vms.items() if r.state is VmState.READY]

            await wait_until(lambda: len(ready()) == 5, 30, what="scale-out to five")
            idlest = sorted(prov.vms)[2]
            balancer.outstanding = {name: 0 if name == idlest else 3 for name in prov.vms}
            await wait_until(lambda: idlest in one.fleet.balancers["b1"].outstanding, 10, what="a report")
            total[0], fell = 32.0, time.monotonic()
            await wait_until(lambda: balancer.drains, 30, what="a drain")
            delay = time.monotonic() - fell
            await wait_until(lambda: [d.vm for d in prov.destroys] == [idlest], 30, what="the idlest destroyed")
            status = await _status(bus)
        finally:
            loader.cancel()
    assert [d.vm for d in balancer.drains] == [idlest]
    assert delay >= 2.5, delay
    assert status.desired == 4 and len(prov.creates) == 5


async def _collect(bus: Bus, subject: str) -> Collector:
    """A Collector subscribed to `subject` (a plain subscriber that never replies)."""
    collector = Collector()

    async def on_message(msg: object) -> None:
        await collector(msg)

    await bus.nc.subscribe(subject, cb=on_message)
    return collector


async def test_a_create_nobody_listened_for_is_not_a_failure(bus: Bus, settings_env: dict[str, str]) -> None:
    """A leader up before any provisioner does not back off: once one listens, the pending VM is created at once."""
    decisions = await _collect(bus, bus.subjects.scaler_decision)
    async with scaler("s1") as one:
        await wait_until(lambda: one.leading, 20, what="leadership")
        patch = PolicyPatch(failure_backoff_s=3600, failure_backoff_max_s=3600)
        await bus.request(bus.subjects.cmd_policy, patch, ScalingPolicy)
        await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=1), DesiredState)
        await decisions.wait_for(lambda m: b"creating" in m.data)
        await wait_until(lambda: not one.fleet.pending, 20, what="the unheard create forgotten")
        assert one.fleet.failures.count == 0
        async with FakeProvisioner(bus) as prov:
            await wait_until(lambda: len(prov.vms) == 1, 20, what="the create once a provisioner listens (no backoff)")
