"""Identity-bound health over real sockets: a VM proves its UUID in `x-quicfleet-vm`, an impostor gets nothing."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from services.balancer.core.identity import IdentityState
from services.balancer.service import BalancerService
from shared.bus import Bus
from tests.integration.balancer.h3client import h3_client
from tests.integration.balancer.harness import StartBalancer, announce
from tests.integration.balancer.identity_backends import IdentityH1Backend, IdentityH3Backend
from tests.support import wait_until

HONEST = "6f1c1a52-3c57-4d0e-9a51-0c2b8f1d7e01"
IMPOSTOR = "0b9d8e7f-1111-4222-8333-944455556666"
STRANGER = "d3adbeef-0000-4000-8000-000000000000"
"""What answers at the impostor's address instead of the UUID it was announced with."""


def state_of(lb: BalancerService, vm: str) -> IdentityState | None:
    assert lb.router is not None
    backend = lb.router.table.get(vm)
    return backend.verification.state if backend is not None else None


def mismatch_lines(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == "backend.identity_mismatch"]


async def test_vm_announced_with_its_uuid_is_verified_at_once_and_serves(
    bus: Bus, start_balancer: StartBalancer
) -> None:
    """A VM announced with identity is checked right away (not at the 60 s interval) and then serves, header and all."""
    async with IdentityH1Backend(HONEST) as vm, start_balancer() as lb:
        await announce(bus, lb, "vm-a", vm.address, uuid=HONEST)
        await wait_until(lambda: state_of(lb, "vm-a") is IdentityState.VERIFIED, timeout=10, what="vm-a verified")
        async with h3_client(lb.port) as client:
            response = await client.get("/")
    assert response.status == 200 and response.text.strip() == f"Server Address: {vm.address}"
    assert response.headers[b"x-quicfleet-vm"] == HONEST.encode()


@pytest.mark.parametrize("answers_as", [STRANGER, None], ids=["another-uuid", "no-header"])
async def test_impostor_at_an_announced_address_is_never_routed_to(
    bus: Bus, start_balancer: StartBalancer, answers_as: str | None
) -> None:
    """Of two VMs, the one answering with another UUID (or none) gets no request: all go to the honest one."""
    async with (
        IdentityH1Backend(HONEST) as honest,
        IdentityH1Backend(answers_as) as impostor,
        start_balancer(balancer_metrics_port=0, balancer_policy="round_robin") as lb,
    ):
        with capture_logs() as logs:
            await announce(bus, lb, "vm-honest", honest.address, uuid=HONEST)
            await announce(bus, lb, "vm-impostor", impostor.address, uuid=IMPOSTOR)
            await wait_until(lambda: state_of(lb, "vm-honest") is IdentityState.VERIFIED, what="honest verified")
            await wait_until(lambda: mismatch_lines(logs), timeout=10, what="the mismatch log line")
        async with h3_client(lb.port) as client:
            responses = await asyncio.gather(*(client.get("/") for _ in range(20)))
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{lb.metrics_port}/metrics") as r:
            metrics = await r.text()
        report = {b.vm: b.routable for b in lb.report().backends}
    assert {(r.status, r.text.strip()) for r in responses} == {(200, f"Server Address: {honest.address}")}
    assert impostor.served("/") == 0 and impostor.served("/healthz") >= 1
    assert 'quicfleet_balancer_identity_mismatches_total{vm="vm-impostor"} 1.0' in metrics
    (line,) = mismatch_lines(logs)
    seen = answers_as or "no x-quicfleet-vm header"
    assert (line["vm"], line["address"], line["expected"], line["seen"]) == (
        "vm-impostor",
        impostor.address,
        IMPOSTOR,
        seen,
    )
    assert report == {"vm-honest": True, "vm-impostor": False}


@pytest.mark.parametrize("upstream", ["http1", "http3"])
async def test_vm_that_starts_answering_as_another_is_dropped_and_its_request_retried(
    bus: Bus, start_balancer: StartBalancer, tmp_path: Path, upstream: str
) -> None:
    """Once a verified VM's answers carry another UUID, none reaches a client: the GET is retried on the honest VM."""

    def make(uuid: str) -> IdentityH1Backend | IdentityH3Backend:
        return IdentityH1Backend(uuid) if upstream == "http1" else IdentityH3Backend(tmp_path, uuid)

    settings = {"upstream_protocol": upstream, "balancer_policy": "round_robin", "balancer_retry_budget": 1.0}
    honest, turned = make(HONEST), make(IMPOSTOR)
    async with honest, turned, start_balancer(**settings) as lb:
        router = lb.router
        assert router is not None
        await announce(bus, lb, "vm-honest", honest.address, uuid=HONEST)
        await announce(bus, lb, "vm-turned", turned.address, uuid=IMPOSTOR)
        await wait_until(
            lambda: {state_of(lb, "vm-honest"), state_of(lb, "vm-turned")} == {IdentityState.VERIFIED},
            timeout=10,
            what="both verified",
        )
        turned.identity = STRANGER  # the address now belongs to another machine
        async with h3_client(lb.port) as client:
            responses = [await client.get("/") for _ in range(6)]
    assert {(r.status, r.text.strip()) for r in responses} == {(200, f"Server Address: {honest.address}")}
    assert turned.paths.count("/") == 1
    assert state_of(lb, "vm-turned") is IdentityState.MISMATCH
    assert router.telemetry.identity_mismatches == {"vm-turned": 1} and router.telemetry.retries == 1


async def test_identity_check_off_routes_without_looking(bus: Bus, start_balancer: StartBalancer) -> None:
    """With balancer_identity_check off, a VM announced with identity serves without sending its UUID."""
    async with IdentityH1Backend(None) as vm, start_balancer(balancer_identity_check=False) as lb:
        router = lb.router
        assert router is not None
        await announce(bus, lb, "vm-a", vm.address, uuid=HONEST)
        async with h3_client(lb.port) as client:
            response = await client.get("/")
    assert response.status == 200 and response.text.strip() == f"Server Address: {vm.address}"
    assert state_of(lb, "vm-a") is IdentityState.UNCHECKED and router.telemetry.identity_mismatches == {}
