"""Rejected-input counts: tallied per subject, carried in `$SRV.STATS`, summed and exposed by metrics."""

from __future__ import annotations

import json

from prometheus_client import generate_latest

from services.balancer.process.telemetry import Telemetry
from services.balancer.process.telemetry import make_registry as balancer_registry
from services.metrics.exposition import make_registry, render
from services.metrics.rejections import Rejections, parse_stats
from services.metrics.state import MetricsState
from shared.endpoints import STATS_KEY
from shared.throttle import OVERFLOW_KEY, Tally, rejected_inputs


def _stats(name: str, instance: str, counts: object) -> bytes:
    endpoint = {"name": "scale", "subject": "fleet.cmd.scale", "data": {STATS_KEY: counts}}
    return json.dumps({"name": name, "id": instance, "endpoints": [endpoint], "type": "x"}).encode()


def test_a_tally_counts_per_key_and_shares_one_overflow_key_past_its_bound() -> None:
    """Past `max_keys` subjects, new ones are counted under the overflow key, so the tally stays bounded."""
    tally = Tally(max_keys=2)
    for key in ["a", "b", "a", "c", "d"]:
        tally.add(key)
    assert tally.counts == {"a": 2, "b": 1, OVERFLOW_KEY: 2}


def test_rejected_inputs_sums_sources_per_subject_and_drops_zeros() -> None:
    """Commands and events on one subject add up; a subject with no rejection is left out."""
    assert rejected_inputs({"x": 2, "z": 0}, {"x": 1, "y": 4}) == {"x": 3, "y": 4}


def test_stats_replies_are_parsed_and_garbage_is_ignored() -> None:
    """A micro STATS reply yields its counts; malformed replies or negative counts yield nothing."""
    assert parse_stats(_stats("scaler", "id1", {"fleet.cmd.scale": 3})) == ("scaler", "id1", {"fleet.cmd.scale": 3})
    assert parse_stats(_stats("scaler", "id1", {"fleet.cmd.scale": -1})) is None
    assert parse_stats(_stats("scaler", "id1", ["nope"])) is None
    assert parse_stats(b"\xff{") is None
    assert parse_stats(json.dumps({"name": "balancer", "id": "b", "endpoints": []}).encode()) is None


def test_instances_are_summed_per_service_and_forgotten_after_a_while() -> None:
    """Two provisioners' counts add up per subject; one not heard from for `forget_after_s` drops out."""
    rejections = Rejections(forget_after_s=10)
    rejections.observe("provisioner", "p1", {"fleet.prov.list": 2}, now=0)
    rejections.observe("provisioner", "p2", {"fleet.prov.list": 5, "fleet.vm.draining": 1}, now=8)
    assert rejections.totals() == {("provisioner", "fleet.prov.list"): 7, ("provisioner", "fleet.vm.draining"): 1}
    assert rejections.expire(now=12) == [("provisioner", "p1")]
    assert rejections.totals()[("provisioner", "fleet.prov.list")] == 5


def test_metrics_exposes_the_rejected_inputs_counter_per_service_and_subject() -> None:
    """`/metrics` of the metrics service shows `quicfleet_rejected_inputs_total{service,subject}`."""
    state = MetricsState(10, 60, 1)
    state.rejections.observe("scaler", "s1", {"fleet.cmd.scale": 4}, now=0)
    text = render(make_registry(state)).decode()
    assert 'quicfleet_rejected_inputs_total{service="scaler",subject="fleet.cmd.scale"} 4.0' in text


def test_the_balancer_exposes_its_own_rejected_inputs() -> None:
    """The balancer's `/metrics` shows its bad events under the same series name, service "balancer"."""
    telemetry = Telemetry(rejected_inputs=lambda: {"fleet.balancer.drain": 2})
    text = generate_latest(balancer_registry(telemetry)).decode()
    assert 'quicfleet_rejected_inputs_total{service="balancer",subject="fleet.balancer.drain"} 2.0' in text
