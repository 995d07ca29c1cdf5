"""What `/metrics` and the dashboard JSON render from the core (no server, no sockets)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.metrics.dashboard import payload
from services.metrics.exposition import make_registry, render
from services.metrics.http import _points, _since
from services.metrics.state import MetricsState
from shared.contract.events import VmState, VmStateChanged
from shared.contract.load import LATENCY_BOUNDS_S
from shared.contract.status import DesiredState
from tests.unit.metrics.builders import T0, backend, report


def loaded_state() -> MetricsState:
    """Two balancers, two VMs, a desired size, a few ticks of history."""
    state = MetricsState(window_s=10, history_s=60, interval_s=1)
    state.fleet.vm_changed(VmStateChanged(vm="vm-a", state=VmState.READY, at=T0), now=0)
    state.fleet.vm_changed(VmStateChanged(vm="vm-b", state=VmState.BOOTING, at=T0), now=0)
    state.fleet.desired_changed(DesiredState(desired=3))
    for t in range(1, 6):
        state.aggregator.observe(report("b1", t, [backend("vm-a", 7 * t, errors=t), backend("vm-b", t)]), now=t)
        state.aggregator.observe(report("b2", t, [backend("vm-a", 3 * t, latency_s=0.3)]), now=t)
        state.tick(float(t), T0 + timedelta(seconds=t))
    return state


def families(state: MetricsState) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """Parsed exposition: family name -> {(sample name, labels): value}."""
    text = render(make_registry(state)).decode()
    parsed = {}
    for family in text_string_to_metric_families(text):
        parsed[family.name] = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
    return parsed


def test_backend_counters_add_up_over_balancers() -> None:
    """Per-VM request and error counters are the sums of every balancer's cumulative counts."""
    parsed = families(loaded_state())
    requests = parsed["quicfleet_backend_requests"]
    assert requests[("quicfleet_backend_requests_total", (("vm", "vm-a"),))] == 50
    assert requests[("quicfleet_backend_requests_total", (("vm", "vm-b"),))] == 5
    assert parsed["quicfleet_backend_errors"][("quicfleet_backend_errors_total", (("vm", "vm-a"),))] == 5


def test_duration_histogram_is_cumulative_and_complete() -> None:
    """The duration histogram has every contract bucket, cumulative, ending in a count equal to requests."""
    hist = families(loaded_state())["quicfleet_request_duration_seconds"]
    buckets = [v for (name, labels), v in hist.items() if name.endswith("_bucket") and ("vm", "vm-a") in labels]
    assert len(buckets) == len(LATENCY_BOUNDS_S) + 1
    assert buckets == sorted(buckets) and buckets[-1] == 50
    assert hist[("quicfleet_request_duration_seconds_count", (("vm", "vm-a"),))] == 50


def test_fleet_shape_and_window_gauges_are_exposed() -> None:
    """VMs per state, the desired size and the windowed fleet rate are in the exposition."""
    parsed = families(loaded_state())
    assert parsed["quicfleet_vms"][("quicfleet_vms", (("state", "ready"),))] == 1
    assert parsed["quicfleet_vms"][("quicfleet_vms", (("state", "booting"),))] == 1
    assert parsed["quicfleet_desired_vms"][("quicfleet_desired_vms", ())] == 3
    assert parsed["quicfleet_balancers"][("quicfleet_balancers", ())] == 2
    rps = parsed["quicfleet_fleet_requests_per_second"][("quicfleet_fleet_requests_per_second", ())]
    assert rps == pytest.approx(11.0)


def test_dashboard_columns_line_up() -> None:
    """Every dashboard column has one value per history point, and `points` keeps the newest ones."""
    data = payload(loaded_state())
    lengths = {name: len(column) for name, column in data["series"].items()}
    assert set(lengths.values()) == {5}
    assert data["series"]["vms_ready"][-1] == 1 and data["series"]["desired"][-1] == 3
    assert data["latest"]["rps"] == pytest.approx(11.0)
    assert len(payload(loaded_state(), max_points=2)["series"]["t"]) == 2
    assert payload(loaded_state(), max_points=0)["series"]["t"] == []


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, None), ("12", 12), ("-3", None), ("lots", None), ("9" * 40, 100_000)]
)
def test_points_parameter_is_bounded(raw: str | None, expected: int | None) -> None:
    """The `points` query parameter is a bounded count; anything else means all points."""
    assert _points(raw) == expected


def test_dashboard_since_sends_only_newer_points() -> None:
    """With `since` at a held point's time, only the points after it come back, every column alike."""
    state = loaded_state()
    times = payload(state)["series"]["t"]
    newer = payload(state, since=times[2])["series"]
    assert newer["t"] == times[3:] and {len(column) for column in newer.values()} == {len(times) - 3}
    assert payload(state, since=times[-1])["series"]["t"] == []


@pytest.mark.parametrize(("raw", "expected"), [(None, None), ("12.5", 12.5), ("nan", None), ("inf", None), ("x", None)])
def test_since_parameter_is_a_finite_time_or_nothing(raw: str | None, expected: float | None) -> None:
    """The `since` query parameter is a finite number; anything else means the whole history."""
    assert _since(raw) == expected


def test_pooled_vms_are_their_own_state_on_metrics_and_the_dashboard() -> None:
    """A pooled VM counts under `state="pooled"`, not as ready or booting, in the exposition and the dashboard;
    taken from the pool it moves to booting, then ready."""
    state = loaded_state()
    state.fleet.vm_changed(VmStateChanged(vm="vm-p", state=VmState.POOLED, at=T0), now=0)
    state.fleet.vm_changed(VmStateChanged(vm="vm-q", state=VmState.POOLED, at=T0), now=0)
    state.tick(6.0, T0 + timedelta(seconds=6))
    vms = families(state)["quicfleet_vms"]
    assert vms[("quicfleet_vms", (("state", "pooled"),))] == 2
    assert vms[("quicfleet_vms", (("state", "ready"),))] == 1
    data = payload(state)
    assert data["states"]["pooled"] == 2 and data["series"]["vms_pooled"][-1] == 2
    assert data["series"]["vms_pooled"][0] == 0
    state.fleet.vm_changed(VmStateChanged(vm="vm-p", state=VmState.BOOTING, at=T0 + timedelta(seconds=7)), now=7)
    state.fleet.vm_changed(VmStateChanged(vm="vm-p", state=VmState.READY, at=T0 + timedelta(seconds=8)), now=8)
    counts = state.fleet.state_counts()
    assert (counts["pooled"], counts["ready"], counts["booting"]) == (1, 2, 1)
