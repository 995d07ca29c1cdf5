"""The scaler's /metrics: leader, epoch, desired size and decisions of a real replica on a real nats-server."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from services.scaler.bootstrap import bootstrap
from services.scaler.settings import ScalerSettings
from shared.bus import Bus
from shared.contract.commands import ScaleFleet
from shared.contract.status import DesiredState
from tests.integration.scaler.fakes import FakeProvisioner
from tests.support import wait_until


async def _samples(port: int) -> dict[str, float]:
    """Each sample by name and its labels' values joined (`quicfleet_scaler_decisions_total:up`)."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {":".join([s.name, *s.labels.values()]): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_the_leader_exposes_its_lease_the_desired_size_and_its_decisions(
    bus: Bus, settings_env: dict[str, str]
) -> None:
    """A lone replica reads leader 1 at epoch 1; a scale to 2 shows as desired 2 and a decision counted."""
    settings = ScalerSettings(scaler_id="m1", lease_ttl_s=2, scaler_metrics_port=0)
    async with FakeProvisioner(bus) as prov, bootstrap(settings) as scaler:
        server = scaler.telemetry.server
        assert server is not None
        await wait_until(lambda: scaler.leading, 20, what="leadership")
        await bus.request(bus.subjects.cmd_scale, ScaleFleet(replicas=2), DesiredState)
        await wait_until(lambda: len(prov.vms) == 2, 20, what="two VMs")

        async def counted() -> bool:
            samples = await _samples(server.port)
            return sum(v for k, v in samples.items() if k.startswith("quicfleet_scaler_decisions_total:")) >= 1

        await wait_until(counted, 20, what="the decision counted")
        samples = await _samples(server.port)
    assert samples["quicfleet_scaler_leader:m1"] == 1 and samples["quicfleet_scaler_epoch"] >= 1
    assert samples["quicfleet_scaler_desired_vms"] == 2
    assert any(name.startswith("quicfleet_build_info:") and "scaler" in name.split(":") for name in samples)
