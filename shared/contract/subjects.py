"""Every NATS subject quicfleet uses, built from one configurable prefix.

Services never spell a subject themselves; they ask a `Subjects` instance, so a prefix change
(two fleets on one NATS) is one setting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.contract.events import VmState

PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
HOST_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""A provisioner host name, used as one subject token (no dots or wildcards)."""


@dataclass(frozen=True)
class Subjects:
    """Subject names for one fleet; `prefix` defaults to `fleet`."""

    prefix: str = "fleet"

    def __post_init__(self) -> None:
        if not PREFIX_PATTERN.match(self.prefix):
            raise ValueError(f"subject prefix {self.prefix!r} must be dot-separated tokens of [A-Za-z0-9_-]")

    def _s(self, rest: str) -> str:
        return f"{self.prefix}.{rest}"

    # public commands (requests, answered by the scaler)
    @property
    def cmd_scale(self) -> str:
        return self._s("cmd.scale")

    @property
    def cmd_policy(self) -> str:
        return self._s("cmd.policy")

    @property
    def cmd_status(self) -> str:
        return self._s("cmd.status")

    @property
    def cmd_drain(self) -> str:
        return self._s("cmd.drain")

    # the template rollout (shared/contract/rollout.py), answered by the scaler
    @property
    def cmd_rollout_start(self) -> str:
        return self._s("cmd.rollout.start")

    @property
    def cmd_rollout_pause(self) -> str:
        return self._s("cmd.rollout.pause")

    @property
    def cmd_rollout_resume(self) -> str:
        return self._s("cmd.rollout.resume")

    @property
    def cmd_rollout_abort(self) -> str:
        return self._s("cmd.rollout.abort")

    @property
    def cmd_rollout_status(self) -> str:
        return self._s("cmd.rollout.status")

    @property
    def scaler_rollout(self) -> str:
        """`fleet.scaler.rollout`: the leader's rollout moved (`RolloutChanged`)."""
        return self._s("scaler.rollout")

    # public events
    def vm(self, state: VmState) -> str:
        """`fleet.vm.<state>`: one VM changed state."""
        return self._s(f"vm.{state.value}")

    @property
    def vm_all(self) -> str:
        return self._s("vm.*")

    @property
    def load(self) -> str:
        """`fleet.load`: the metrics service's periodic fleet load snapshot."""
        return self._s("load")

    @property
    def scaler_decision(self) -> str:
        return self._s("scaler.decision")

    @property
    def scaler_forecast(self) -> str:
        """`fleet.scaler.forecast`: the leader's load forecast, once a minute (`ForecastMade`)."""
        return self._s("scaler.forecast")

    # internal: provisioner commands (requests, queue group per hypervisor host)
    @property
    def prov_create(self) -> str:
        """Any one provisioner takes a create (queue group); it answers with the new `VmRecord`."""
        return self._s("prov.create")

    def prov_create_on(self, host: str) -> str:
        """A create for one host's provisioner: the leader places VMs on hosts with room."""
        return self._s(f"prov.{self._host(host)}.create")

    def prov_destroy(self, host: str) -> str:
        """Destroy goes to the one provisioner that owns the VM (its host is in every VM event)."""
        return self._s(f"prov.{self._host(host)}.destroy")

    def prov_drain(self, host: str) -> str:
        """Drain goes to the provisioner that owns the VM: it alone writes VM state (`fleet.vm.draining`)."""
        return self._s(f"prov.{self._host(host)}.drain")

    @staticmethod
    def _host(host: str) -> str:
        if not HOST_TOKEN.match(host):
            raise ValueError(f"host {host!r} cannot be a subject token")
        return host

    @property
    def prov_list(self) -> str:
        """Ask every provisioner for the VMs libvirt says it owns (scatter-gather request)."""
        return self._s("prov.list")

    # internal: template versions (shared/contract/templates.py)
    def prov_template_push(self, host: str) -> str:
        """`PushTemplate` to one host: it copies the image into its own pool and checks the digest."""
        return self._s(f"prov.{self._host(host)}.template.push")

    def prov_template_retire(self, host: str) -> str:
        """`RetireTemplate` to one host: delete a version's base image once no backing chain holds it."""
        return self._s(f"prov.{self._host(host)}.template.retire")

    def prov_template_protect(self, host: str) -> str:
        """`ProtectTemplate` to one host: keep (or stop keeping) a version a rollout may roll back to."""
        return self._s(f"prov.{self._host(host)}.template.protect")

    @property
    def prov_template_list(self) -> str:
        """Ask every provisioner for its template versions and their use (scatter-gather request)."""
        return self._s("prov.template.list")

    @property
    def template_ready(self) -> str:
        """`TemplateVersionReady`: a version is complete and checked on one host."""
        return self._s("template.ready")

    @property
    def template_retired(self) -> str:
        """`TemplateVersionRetired`: a version's base image was deleted on one host."""
        return self._s("template.retired")

    # internal: balancer traffic
    @property
    def balancer_report(self) -> str:
        """Each balancer's per-second load report, for metrics and the scaler."""
        return self._s("balancer.report")

    @property
    def balancer_drained(self) -> str:
        """A balancer says it has no request in flight to a draining VM."""
        return self._s("balancer.drained")

    # internal: scaler coordination
    @property
    def scaler_state(self) -> str:
        """The leader scaler's desired state, published on every change (balancers, CLI)."""
        return self._s("scaler.state")
