"""Every subject of `shared.contract.subjects.Subjects`, with its contract model and who listens to it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from shared.contract.commands import DrainVm, GetStatus, PolicyPatch, ScaleFleet
from shared.contract.draining import BackendDrained
from shared.contract.events import ScalingDecided, VmState, VmStateChanged
from shared.contract.forecast import ForecastMade
from shared.contract.load import BalancerReported, FleetLoaded
from shared.contract.provisioning import CreateVm, DestroyVm, ListVms, StartDrain
from shared.contract.rollout import (
    AbortRollout,
    GetRollout,
    PauseRollout,
    ResumeRollout,
    RolloutChanged,
    StartRollout,
)
from shared.contract.status import DesiredState
from shared.contract.subjects import Subjects
from shared.contract.templates import (
    ListTemplates,
    ProtectTemplate,
    PushTemplate,
    RetireTemplate,
    TemplateVersionReady,
    TemplateVersionRetired,
)

WILDCARDS = frozenset({"vm_all"})
"""Subscription patterns, not subjects one publishes to (their members are listed one by one)."""


@dataclass(frozen=True)
class Target:
    """One subject to fuzz: its `Subjects` attribute, the subject, the model and a valid example."""

    attribute: str
    subject: str
    model: type[BaseModel]
    valid: dict[str, Any]
    listeners: frozenset[str]
    """Services that parse it: for a command the one that answers, for an event its subscribers."""


def _valid(model: type[BaseModel], **fields: Any) -> dict[str, Any]:
    return model(**fields).model_dump(mode="json")


def commands(s: Subjects, host: str) -> list[Target]:
    """The scaler's public commands and the provisioner's internal ones (request/reply)."""
    scaler, prov = frozenset({"scaler"}), frozenset({"provisioner"})
    create = _valid(CreateVm, request_id="r-1", epoch=1)
    return [
        Target("cmd_scale", s.cmd_scale, ScaleFleet, _valid(ScaleFleet, replicas=1), scaler),
        Target("cmd_policy", s.cmd_policy, PolicyPatch, _valid(PolicyPatch, max_replicas=3), scaler),
        Target("cmd_status", s.cmd_status, GetStatus, _valid(GetStatus), scaler),
        Target("cmd_drain", s.cmd_drain, DrainVm, _valid(DrainVm, vm="vm-1"), scaler),
        Target("prov_create", s.prov_create, CreateVm, create, prov),
        Target("prov_create_on", s.prov_create_on(host), CreateVm, create, prov),
        Target("prov_destroy", s.prov_destroy(host), DestroyVm, _valid(DestroyVm, vm="vm-1", request_id="r", epoch=1),
               prov),
        Target("prov_drain", s.prov_drain(host), StartDrain, _valid(StartDrain, vm="vm-1", request_id="r", epoch=1),
               prov),
        Target("prov_list", s.prov_list, ListVms, _valid(ListVms), prov),
        Target("cmd_rollout_start", s.cmd_rollout_start, StartRollout, _valid(StartRollout, version="v9"), scaler),
        Target("cmd_rollout_pause", s.cmd_rollout_pause, PauseRollout, _valid(PauseRollout), scaler),
        Target("cmd_rollout_resume", s.cmd_rollout_resume, ResumeRollout, _valid(ResumeRollout), scaler),
        Target("cmd_rollout_abort", s.cmd_rollout_abort, AbortRollout, _valid(AbortRollout), scaler),
        Target("cmd_rollout_status", s.cmd_rollout_status, GetRollout, _valid(GetRollout), scaler),
        Target("prov_template_push", s.prov_template_push(host), PushTemplate,
               _valid(PushTemplate, source="no-such-domain"), prov),
        Target("prov_template_retire", s.prov_template_retire(host), RetireTemplate,
               _valid(RetireTemplate, version="v9"), prov),
        Target("prov_template_protect", s.prov_template_protect(host), ProtectTemplate,
               _valid(ProtectTemplate, version="v9", protected=True), prov),
        Target("prov_template_list", s.prov_template_list, ListTemplates, _valid(ListTemplates), prov),
    ]


def events(s: Subjects) -> list[Target]:
    """Every event subject (each `fleet.vm.<state>` on its own), with the services subscribed to it."""
    vm = _valid(VmStateChanged, vm="vm-1", state=VmState.READY)
    trio = frozenset({"scaler", "metrics", "balancer"})
    found = [
        Target("vm", s.vm(state), VmStateChanged, vm | {"state": state.value}, trio)
        for state in VmState
    ]
    report = _valid(BalancerReported, balancer="lb-1", started_at="2026-01-01T00:00:00Z")
    return [
        *found,
        Target("load", s.load, FleetLoaded, _valid(FleetLoaded, window_s=10), frozenset({"scaler"})),
        Target("scaler_forecast", s.scaler_forecast, ForecastMade,
               _valid(ForecastMade, mode="watch", signal="rps", working=True), frozenset({"metrics"})),
        Target("scaler_decision", s.scaler_decision, ScalingDecided,
               _valid(ScalingDecided, current=1, desired=2, reason="test"), frozenset({"metrics"})),
        Target("balancer_report", s.balancer_report, BalancerReported, report, frozenset({"scaler", "metrics"})),
        Target("balancer_drained", s.balancer_drained, BackendDrained,
               _valid(BackendDrained, vm="vm-1", balancer="lb-1"), frozenset({"scaler"})),
        Target("scaler_state", s.scaler_state, DesiredState, _valid(DesiredState), frozenset({"scaler", "metrics"})),
        Target("scaler_rollout", s.scaler_rollout, RolloutChanged,
               _valid(RolloutChanged, phase="rolling", new_version="v2"), frozenset({"scaler"})),
        Target("template_ready", s.template_ready, TemplateVersionReady,
               _valid(TemplateVersionReady, host="h1", template="t", version="v2", digest="ab" * 32), frozenset()),
        Target("template_retired", s.template_retired, TemplateVersionRetired,
               _valid(TemplateVersionRetired, host="h1", version="v2"), frozenset()),
    ]


def uncovered(targets: list[Target]) -> set[str]:
    """`Subjects` members no target covers: a subject added to the contract must be added here too."""
    members = {name for name, attr in vars(Subjects).items() if not name.startswith("_") and name != "vm_all"
               and (isinstance(attr, property) or callable(attr))}
    return members - {t.attribute for t in targets}
