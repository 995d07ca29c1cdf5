"""How CLI results look: rich tables for people, one JSON document (or line) for scripts.

Pure functions from contract models to rich renderables or plain dicts, so tests check what a
person would read without a terminal.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from shared.contract.events import LIVE_STATES, ScalingDecided, VmState, VmStateChanged
from shared.contract.load import FleetLoaded
from shared.contract.policy import ScalingPolicy
from shared.contract.status import FleetStatus, VmStatus

STATE_STYLES: dict[VmState, str] = {
    VmState.REQUESTED: "cyan",
    VmState.CLONING: "cyan",
    VmState.BOOTING: "yellow",
    VmState.READY: "bold green",
    VmState.POOLED: "blue",
    VmState.DRAINING: "magenta",
    VmState.DESTROYED: "dim",
    VmState.FAILED: "bold red",
}


def age(since: datetime, now: datetime) -> str:
    """A short age like `42s`, `3m05s` or `2h07m` (never negative: clocks between hosts differ)."""
    seconds = max(0, int((now - since).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def state_text(state: VmState) -> Text:
    return Text(state.value, style=STATE_STYLES[state])


def vm_load(vm: VmStatus, load: FleetLoaded | None) -> str:
    """A VM's load: outstanding requests from the status, and requests/s from the latest snapshot."""
    parts = [f"{vm.outstanding:g} out"] if vm.outstanding is not None else []
    snapshot = {v.vm: v for v in load.vms} if load else {}
    if vm.name in snapshot:
        parts.append(f"{snapshot[vm.name].rps:.1f} rps")
    return ", ".join(parts) or "-"


def fleet_headline(status: FleetStatus) -> Text:
    """`desired 3, live 2, ready 1` (and `, pooled 1`) with the leader and a manual hold when there is one.

    Pooled VMs are not capacity: they are counted apart, so a full fleet with its pool reads green.
    """
    live = sum(1 for vm in status.vms if vm.state in LIVE_STATES and not vm.pool and vm.state is not VmState.POOLED)
    ready = sum(1 for vm in status.vms if vm.state is VmState.READY)
    pooled = sum(1 for vm in status.vms if vm.state is VmState.POOLED)
    style = "green" if ready == live == status.desired else "yellow"
    text = Text.assemble("desired ", (str(status.desired), "bold"), f", live {live}, ready ", (str(ready), style))
    if pooled:
        text.append(f", pooled {pooled}", style="blue")
    if status.leader:
        text.append(f"   leader {status.leader}", style="dim")
    if status.hold_until:
        text.append(f"   autoscaling held until {status.hold_until:%H:%M:%S}", style="dim")
    return text


def vm_table(status: FleetStatus, now: datetime) -> Table:
    table = Table(title="VMs", title_justify="left", expand=False)
    for column in ("name", "state", "address", "load", "age"):
        table.add_column(column)
    for vm in sorted(status.vms, key=lambda v: v.since):
        table.add_row(vm.name, state_text(vm.state), vm.address or "-", vm_load(vm, status.load), age(vm.since, now))
    return table


def balancer_table(status: FleetStatus, now: datetime) -> Table:
    table = Table(title="Balancers", title_justify="left")
    for column in ("id", "clients connect to", "last report"):
        table.add_column(column)
    for balancer in status.balancers:
        table.add_row(balancer.id, balancer.address or "-", age(balancer.last_seen, now) + " ago")
    return table


def load_line(load: FleetLoaded | None) -> Text:
    if load is None:
        return Text("load: no snapshot yet (is the metrics service running?)", style="dim")
    p95 = f"{load.p95_s * 1000:.1f} ms" if load.p95_s is not None else "-"
    return Text(f"load: {load.rps:.1f} req/s, {load.outstanding:g} outstanding, "
                f"p95 {p95}, errors {load.error_rate:.1%} (over {load.window_s:g} s)")


def status_view(status: FleetStatus, now: datetime) -> RenderableType:
    """The whole `quicfleet status` screen."""
    parts: list[RenderableType] = [fleet_headline(status), vm_table(status, now)]
    parts.append(balancer_table(status, now) if status.balancers else Text("no balancer has reported", style="dim"))
    parts.append(load_line(status.load))
    if status.reason:
        parts.append(Text(f"scaler: {status.reason}"))
    if status.rollout is not None:
        from ops.cli.rollout import summary

        parts.append(Text(summary(status.rollout)))
    return Group(*parts)


def policy_table(policy: ScalingPolicy) -> Table:
    table = Table(title="Scaling policy", title_justify="left")
    table.add_column("field")
    table.add_column("value", justify="right")
    for name, value in policy.model_dump(mode="json").items():
        table.add_row(name, str(value))
    return table


def event_text(subject: str, event: BaseModel, now: datetime) -> Text:
    """One line of `quicfleet watch`."""
    stamp = Text(f"{now:%H:%M:%S} ", style="dim")
    if isinstance(event, VmStateChanged):
        detail = " ".join(x for x in (event.address or "", event.reason or "") if x)
        return stamp + Text.assemble(("vm ", "bold"), f"{event.vm} ", state_text(event.state), f" {detail}".rstrip())
    if isinstance(event, ScalingDecided):
        return stamp + Text.assemble(("decision ", "bold"), f"{event.current} -> {event.desired}: {event.reason}")
    if isinstance(event, FleetLoaded):
        return stamp + Text("load ", style="bold") + load_line(event)[len("load: "):]
    return stamp + Text(f"{subject} {event.model_dump_json()}")


def as_json(value: BaseModel | dict[str, Any]) -> dict[str, Any]:
    """A model (or dict) as JSON-ready data, datetimes as RFC 3339 strings."""
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value
