"""What `status`, `policy show` and `watch` put on the screen."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from ops.cli.render import age, event_text, policy_table, status_view
from shared.contract.events import ScalingDecided, VmState, VmStateChanged
from shared.contract.load import FleetLoaded, VmLoad
from shared.contract.policy import ScalingPolicy
from shared.contract.status import BalancerStatus, FleetStatus, VmStatus

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def text_of(renderable: object) -> str:
    console = Console(record=True, width=160, color_system=None)
    console.print(renderable)
    return console.export_text()


@pytest.mark.parametrize(("seconds", "shown"), [(0, "0s"), (59, "59s"), (61, "1m01s"), (7322, "2h02m"), (-5, "0s")])
def test_age_is_short_and_never_negative(seconds: int, shown: str) -> None:
    """Ages read as seconds, minutes or hours, and a clock ahead of ours shows 0s."""
    assert age(NOW - timedelta(seconds=seconds), NOW) == shown


def test_status_view_shows_vms_balancers_and_desired_against_actual() -> None:
    """The status screen lists each VM with state, address, load and age, the balancers and the counts."""
    load = FleetLoaded(window_s=10, rps=12.5, vms=[VmLoad(vm="qf-a", rps=12.5)])
    status = FleetStatus(
        desired=2, policy=ScalingPolicy(), leader="scaler-1",
        vms=[VmStatus(name="qf-a", state=VmState.READY, address="10.0.0.5:443", since=NOW - timedelta(seconds=90),
                      outstanding=3)],
        balancers=[BalancerStatus(id="b1", address="127.0.0.1:8443", last_seen=NOW)],
        load=load, reason="outstanding 2 per VM vs target 8: recommend 1, scale-in waits for warming VMs (hold)",
    )
    shown = text_of(status_view(status, NOW))
    assert "scaler: outstanding 2 per VM" in shown and "waits for warming VMs" in shown
    assert "desired 2, live 1, ready 1" in shown
    assert "qf-a" in shown and "ready" in shown and "10.0.0.5:443" in shown
    assert "3 out, 12.5 rps" in shown and "1m30s" in shown
    assert "127.0.0.1:8443" in shown and "12.5 req/s" in shown


def test_status_view_says_when_nothing_reported() -> None:
    """With no balancer and no load snapshot the screen says so instead of showing empty tables."""
    shown = text_of(status_view(FleetStatus(desired=0, policy=ScalingPolicy()), NOW))
    assert "no balancer has reported" in shown and "no snapshot yet" in shown


def test_policy_table_lists_every_field() -> None:
    """`policy show` has one row per policy field."""
    shown = text_of(policy_table(ScalingPolicy()))
    assert all(name in shown for name in ScalingPolicy.model_fields)


def test_watch_lines_name_what_happened() -> None:
    """VM events show name, state and reason; decisions show the move and why."""
    vm = text_of(event_text("fleet.vm.failed", VmStateChanged(vm="qf-b", state=VmState.FAILED, reason="no lease"), NOW))
    decision = text_of(event_text("fleet.scaler.decision", ScalingDecided(current=1, desired=3, reason="load"), NOW))
    assert "qf-b failed no lease" in vm
    assert "1 -> 3: load" in decision


def test_get_targets_the_first_balancer_that_has_an_address() -> None:
    """`quicfleet get` uses the first reporting balancer's address, a wildcard host meaning loopback."""
    from ops.cli.fetch import balancer_url

    status = FleetStatus(desired=0, policy=ScalingPolicy(), balancers=[
        BalancerStatus(id="b0", last_seen=NOW), BalancerStatus(id="b1", address="0.0.0.0:443", last_seen=NOW)])
    assert balancer_url(status, "/x") == "https://127.0.0.1:443/x"
    assert balancer_url(FleetStatus(desired=0, policy=ScalingPolicy()), "/") is None
