"""B1: Hypothesis-made hostile payloads on every command and every internal subject, at the real services."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from ops.natsserver import NatsServer
from services.metrics.bootstrap import bootstrap as metrics_bootstrap
from services.metrics.service import MetricsService
from services.metrics.settings import MetricsSettings
from services.provisioner.bootstrap import bootstrap as provisioner_bootstrap
from services.provisioner.core.ports import Hypervisor
from services.provisioner.libvirt_adapter import LibvirtHypervisor
from services.scaler.bootstrap import bootstrap as scaler_bootstrap
from services.scaler.settings import ScalerSettings
from shared.bus import Bus
from shared.contract.commands import GetStatus
from shared.contract.provisioning import ListVms, VmList
from shared.contract.status import FleetStatus
from tests.integration.balancer.harness import StartBalancer
from tests.integration.chaos.catalogue import Target, commands, events, uncovered
from tests.integration.chaos.fuzz import payloads
from tests.integration.chaos.probe import CountingHypervisor, bounded, invalid_reply_problem, rss_mib
from tests.support import chaos, wait_until

pytestmark = pytest.mark.chaos

ALL = frozenset({"scaler", "provisioner", "metrics", "balancer"})
CASES = 10_000 if chaos.long_variants() else 300


def _cases(targets: list[Target]) -> dict[str, list[bytes]]:
    return {t.subject: payloads(t.model, t.valid, CASES, seed) for seed, t in enumerate(targets)}


async def _fuzz_commands(bus: Bus, targets: list[Target], cases: dict[str, list[bytes]]) -> list[str]:
    """Send every case as a request; return what was wrong with any reply."""

    async def ask(item: tuple[str, bytes]) -> str | None:
        subject, data = item
        msg = await bus.nc.request(subject, data, timeout=15)
        problem = invalid_reply_problem(msg)
        return f"{subject} {data[:80]!r}: {problem}" if problem else None

    items = [(t.subject, data) for t in targets for data in cases[t.subject]]
    return [p for p in await bounded(items, ask) if p]


async def _fuzz_events(bus: Bus, targets: list[Target], cases: dict[str, list[bytes]]) -> None:
    for target in targets:
        for data in cases[target.subject]:
            await bus.nc.publish(target.subject, data)
    await bus.barrier()


def _split(targets: list[Target], service: str) -> tuple[list[Target], list[Target]]:
    """(those `service` listens to, the rest)."""
    return [t for t in targets if service in t.listeners], [t for t in targets if service not in t.listeners]


def _expected(targets: list[Target], cases: dict[str, list[bytes]], running: frozenset[str]
              ) -> dict[tuple[str, str], int]:
    """Bad inputs each running service must have counted, per subject."""
    return {(svc, t.subject): len(cases[t.subject]) for t in targets for svc in t.listeners & running}


async def _scraped(http: aiohttp.ClientSession, metrics: MetricsService) -> dict[tuple[str, str], int]:
    assert metrics.http is not None
    await metrics.gather_rejections()
    async with http.get(metrics.http.url + "/metrics") as response:
        text = await response.text()
    return {
        (s.labels["service"], s.labels["subject"]): int(s.value)
        for family in text_string_to_metric_families(text) if family.name == "quicfleet_rejected_inputs"
        for s in family.samples if s.name.endswith("_total")
    }


@dataclass
class Plan:
    """The subjects in the order they are fuzzed, and the cases made for each."""

    prov_cmds: list[Target]
    prov_events: list[Target]
    scaler_cmds: list[Target]
    other_events: list[Target]
    cases: dict[str, list[bytes]] = field(default_factory=dict)

    @classmethod
    def make(cls, bus: Bus, host: str) -> Plan:
        scaler_cmds, prov_cmds = _split(commands(bus.subjects, host), "scaler")
        prov_events, other_events = _split(events(bus.subjects), "provisioner")
        plan = cls(prov_cmds, prov_events, scaler_cmds, other_events)
        assert uncovered(plan.targets) == set()
        plan.cases = _cases(plan.targets)
        return plan

    @property
    def targets(self) -> list[Target]:
        return self.prov_cmds + self.prov_events + self.scaler_cmds + self.other_events

    def expected(self) -> dict[tuple[str, str], int]:
        """Per (service, subject), the bad inputs it must have counted (phase one ran before scaler and balancer)."""
        counts = _expected(self.prov_cmds + self.scaler_cmds + self.other_events, self.cases, ALL)
        return counts | _expected(self.prov_events, self.cases, frozenset({"provisioner", "metrics"}))

    def commands_sent(self) -> int:
        return sum(len(self.cases[t.subject]) for t in self.prov_cmds + self.scaler_cmds)


async def test_hostile_payloads_on_every_subject_are_refused_counted_and_touch_no_libvirt(
    bus: Bus, nats_server: NatsServer, world: Any, start_balancer: StartBalancer, settings_env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every hostile command gets a clear `invalid` micro error, no libvirt call, no trace; every count matches."""
    plan = Plan.make(bus, world.host)
    hv = CountingHypervisor(LibvirtHypervisor(world.settings(nats_server).libvirt_uri))
    settings = world.settings(nats_server, max_vms=0, reconcile_interval_s=3600)
    before, started = _libvirt_state(world), time.monotonic()
    with capture_logs() as logs:
        async with AsyncExitStack() as stack:
            http = await stack.enter_async_context(aiohttp.ClientSession())
            metrics = await stack.enter_async_context(metrics_bootstrap(MetricsSettings(metrics_port=0)))
            await stack.enter_async_context(provisioner_bootstrap(settings, hv=cast(Hypervisor, hv)))
            rss_before, calls_at_rest = rss_mib(), hv.total()
            problems = await _fuzz_commands(bus, plan.prov_cmds, plan.cases)
            await _fuzz_events(bus, plan.prov_events, plan.cases)
            phase_one_calls = hv.total() - calls_at_rest
            scaler = await stack.enter_async_context(scaler_bootstrap(ScalerSettings(scaler_id="s1", lease_ttl_s=2)))
            lb = await stack.enter_async_context(start_balancer())
            problems += await _fuzz_commands(bus, plan.scaler_cmds, plan.cases)
            await _fuzz_events(bus, plan.other_events, plan.cases)
            expected = plan.expected()
            want = {k: n for k, n in expected.items() if k[0] != "balancer"}
            scraped = await _settled(http, metrics, want)
            assert scraped == want
            assert dict(lb.bus.throttle.totals) == {s: n for (svc, s), n in expected.items() if svc == "balancer"}
            rss_growth, calls = rss_mib() - rss_before, hv.total()
            await _alive(bus, lb.bus.connected and scaler.leading)
    _check_logs(logs, time.monotonic() - started)
    assert problems == []
    assert phase_one_calls == 0 and hv.mutations() == 0 and _libvirt_state(world) == before
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []
    assert rss_growth < chaos.RSS_GROWTH_LIMIT_MIB
    chaos.record(chaos.Row(
        scenario="B1", title="hostile bus payloads", load="4 services on real NATS",
        inputs=sum(len(v) for v in plan.cases.values()), invariants={"I4": "pass"},
        figures=f"{len(plan.cases)} subjects; {plan.commands_sent()} commands all answered invalid (400); "
                f"{len(scraped)} quicfleet_rejected_inputs_total series = cases sent; libvirt calls for rejected "
                f"input 0 (all calls {calls}: start-up, listings; mutating 0); RSS {rss_growth:+.1f} MiB",
    ))


async def _settled(http: aiohttp.ClientSession, metrics: MetricsService,
                   want: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    """The scraped counts once they equal `want`, or as they stand after 30 s (the caller compares)."""
    scraped: dict[tuple[str, str], int] = {}

    async def matches() -> bool:
        scraped.update(await _scraped(http, metrics))
        return scraped == want

    with contextlib.suppress(AssertionError):
        await wait_until(matches, 30, 0.5, "the rejected-input counts")
    return scraped


async def _alive(bus: Bus, others: bool) -> None:
    """Scaler and provisioner still answer valid commands; the balancer and the scaler still run."""
    status = await bus.request(bus.subjects.cmd_status, GetStatus(), FleetStatus)
    listing = await bus.gather(bus.subjects.prov_list, ListVms(), VmList)
    assert status.leader == "s1" and len(listing) == 1 and others


def _libvirt_state(world: Any) -> tuple[list[str], list[str]]:
    """Every domain and every volume of the test driver's pool, by name."""
    domains = sorted(d.name() for d in world.conn.listAllDomains(0))
    return domains, sorted(world.conn.storagePoolLookupByName("default-pool").listVolumes())


def _check_logs(logs: Sequence[Mapping[str, Any]], elapsed_s: float) -> None:
    """No trace and no failed handler; refusals and bad events rate-limited per subject and period."""
    traced = [e for e in logs if e.get("exc_info") or e["event"] in {"command.failed", "bus.event_handler_failed"}]
    assert traced == []
    limited = [e for e in logs if e["event"] in {"command.refused", "bus.bad_event"}]
    periods = int(elapsed_s // 10) + 1
    assert len(limited) <= 5 * periods * 4 * 22
