"""The provisioner's /metrics on libvirt's test driver: boot and resume times, VMs by state, pool, libvirt errors."""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ops.natsserver import NatsServer
from services.provisioner.bootstrap import bootstrap
from shared.bus import Bus
from shared.contract.events import VmState
from shared.contract.provisioning import CreateVm, VmRecord
from shared.errors import BusError
from tests.integration.provisioner.conftest import World
from tests.integration.provisioner.helpers import VmEvents
from tests.support.h3server import H3Backend


async def _samples(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_boot_resume_states_pool_and_libvirt_errors_are_exposed(
    bus: Bus, nats_server: NatsServer, world: World, backends: list[H3Backend]
) -> None:
    """A pooled boot counts one boot time, its take one resume time; the gauges follow the VM's states, and the
    standard collectors (build info, process) are there."""
    events = await VmEvents().start(bus)
    settings = world.settings(nats_server, static_addresses=backends[0].address, provisioner_metrics_port=0)
    async with bootstrap(settings) as service:
        assert service.metrics is not None
        port = service.metrics.port
        made = await bus.request(bus.subjects.prov_create, CreateVm(request_id="p-1", epoch=1, pooled=True), VmRecord)
        await events.wait_state(made.vm, VmState.POOLED)
        pooled = await _samples(port)
        host = frozenset({("host", world.host)})
        assert pooled[("quicfleet_provisioner_pool", host)] == 1
        assert pooled[("quicfleet_provisioner_vms", host | {("state", "pooled")})] == 1
        assert pooled[("quicfleet_provisioner_boot_seconds_count", frozenset())] == 1
        assert pooled[("quicfleet_provisioner_resume_seconds_count", frozenset())] == 0
        await bus.request(bus.subjects.prov_create_on(world.host), CreateVm(request_id="r-1", epoch=2), VmRecord)
        await events.wait_state(made.vm, VmState.READY)
        ready = await _samples(port)
        assert ready[("quicfleet_provisioner_resume_seconds_count", frozenset())] == 1
        assert ready[("quicfleet_provisioner_pool", host)] == 0
        assert ready[("quicfleet_provisioner_vms", host | {("state", "ready")})] == 1
        assert ready[("quicfleet_build_info", frozenset({("service", "provisioner")}) | _versions(ready))] == 1
        assert any(name == "process_resident_memory_bytes" for name, _ in ready)


async def test_a_failing_libvirt_call_is_counted_by_operation_and_code(
    bus: Bus, nats_server: NatsServer, world: World
) -> None:
    """A create whose template is missing fails in libvirt's lookup: counted as `template` with libvirt's code."""
    settings = world.settings(nats_server, template="no-such-template", provisioner_metrics_port=0)
    async with bootstrap(settings) as service:
        assert service.metrics is not None
        with pytest.raises(BusError):
            await bus.request(bus.subjects.prov_create, CreateVm(request_id="x-1", epoch=1), VmRecord)
        samples = await _samples(service.metrics.port)
    failed = {dict(labels)["operation"]: value for (name, labels), value in samples.items()
              if name == "quicfleet_provisioner_libvirt_errors_total"}
    assert failed.get("template", 0) >= 1, samples


def _versions(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> frozenset[tuple[str, str]]:
    labels = next(dict(found) for name, found in samples if name == "quicfleet_build_info")
    return frozenset((k, v) for k, v in labels.items() if k != "service")
