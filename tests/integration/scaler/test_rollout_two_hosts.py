"""A rollout across two provisioner hosts: each gets its own checked copy of the version, and every VM is replaced."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import libvirt
import pytest

from ops.natsserver import NatsServer
from services.scaler.bootstrap import bootstrap as scaler_bootstrap
from services.scaler.settings import ScalerSettings
from shared.bus import Bus
from shared.contract.commands import GetStatus, ScaleFleet
from shared.contract.events import VmState
from shared.contract.rollout import GetRollout, RolloutPhase, RolloutStatus, StartRollout
from shared.contract.status import DesiredState, FleetStatus
from shared.contract.templates import HostTemplateVersion, ListTemplates, PushTemplate, TemplateList
from tests.integration.scaler import conftest
from tests.support import wait_until
from tests.support.h3server import H3Backend


async def _spread(bus: Bus, count: int, hosts: set[str]) -> bool:
    """`count` ready VMs, on exactly `hosts`."""
    status = await bus.request(bus.subjects.cmd_status, GetStatus(), FleetStatus)
    ready = [v for v in status.vms if v.state is VmState.READY]
    return len(status.vms) == count and len(ready) == count and {v.host for v in ready} == hosts


async def _done(bus: Bus) -> bool:
    status = await bus.request(bus.subjects.cmd_rollout_status, GetRollout(), RolloutStatus)
    return status.rollout is not None and status.rollout.phase is RolloutPhase.DONE


@pytest.mark.skipif(conftest.world is None, reason="the provisioner's libvirt test fixtures are not available")
async def test_a_rollout_spans_two_hosts_each_with_its_own_copy(
    bus: Bus, nats_server: NatsServer, tmp_path: Path, settings_env: dict[str, str]
) -> None:
    """v2 pushed to two hosts is a separate copy on each with the same digest; a fleet spread over both hosts
    rolls onto v2 on both, every domain tagged v2 and each host's copy held by exactly its own VMs' chains."""
    from services.provisioner.bootstrap import bootstrap as provisioner_bootstrap
    from services.provisioner.core.tags import NAMESPACE, parse_tag
    from tests.integration.scaler.versions_pool import sources

    async with AsyncExitStack() as stack:
        src = stack.enter_context(sources(tmp_path))
        world = src.world
        host_a, host_b = world.host, f"hb-{world.host[3:]}"
        backends = [await stack.enter_async_context(H3Backend(tmp_path)) for _ in range(6)]
        on_a = world.settings(nats_server, static_addresses=",".join(b.address for b in backends[:3]))
        on_b = on_a.model_copy(update={"host": host_b, "static_addresses": ",".join(b.address for b in backends[3:])})
        await stack.enter_async_context(provisioner_bootstrap(on_a))
        await stack.enter_async_context(provisioner_bootstrap(on_b))
        leader = await stack.enter_async_context(scaler_bootstrap(ScalerSettings(scaler_id="s1", lease_ttl_s=2)))
        await wait_until(lambda: leader.leading, 20, what="leadership")

        first = await bus.request(bus.subjects.prov_template_push(host_a),
                                  PushTemplate(source=src.source_v2, version="v2"), HostTemplateVersion, 10)
        second = await bus.request(bus.subjects.prov_template_push(host_b), PushTemplate(
            source=src.source_v2, version="v2", digest=first.digest), HostTemplateVersion, 10)
        assert first.ready and second.ready and second.digest == first.digest and second.base != first.base

        await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=4), DesiredState)
        await wait_until(lambda: _spread(bus, 4, {host_a, host_b}), 60, what="four ready VMs over both hosts")
        await bus.request(bus.subjects.cmd_rollout_start, StartRollout(version="v2", canary=0, max_surge=2),
                          RolloutStatus)
        await wait_until(lambda: _done(bus), 90, what="the rollout done")
        await wait_until(lambda: _spread(bus, 4, {host_a, host_b}), 60, what="four ready VMs over both hosts again")

        def clones() -> list[tuple[str, str]]:
            """(host, version) of each of the test's domains, from its tag."""
            tags = [parse_tag(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, 0)) for dom in world.ours()]
            return [(tag.host or "?", tag.version or "-") if tag else ("?", "?") for tag in tags]

        await wait_until(lambda: len(clones()) == 4 and all(v == "v2" for _, v in clones()), 30,
                         what="every domain a clone of v2")
        listed = await bus.gather(bus.subjects.prov_template_list, ListTemplates(), TemplateList, 1.0)
        in_use = {t.host: {v.version: v.in_use for v in t.versions}.get("v2") for t in listed}
        on_host = {host: sum(h == host for h, _ in clones()) for host in (host_a, host_b)}
        assert in_use == on_host, "each host's v2 copy is held by the backing chains of exactly that host's VMs"
