"""Internal commands to the provisioner (sent by the leader scaler) and what it answers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from shared.contract.base import Address, Message, Model, Name, RequestId, VmUuid
from shared.contract.events import VmState
from shared.contract.templates import VersionId

Epoch = Annotated[int, Field(ge=0, le=2**53)]
MEMORY_MIB_MAX = 2**32
"""The largest memory figure a `VmList` carries, in MiB (4 PiB: bounds a confused sender, not a real host)."""
CPUS_MAX = 2**16
"""The largest CPU count a `VmList` carries."""
MemoryMib = Annotated[int, Field(ge=0, le=MEMORY_MIB_MAX)]
Cpus = Annotated[int, Field(ge=1, le=CPUS_MAX)]


class CreateVm(Message):
    """`fleet.prov.create` (any host) or `fleet.prov.<host>.create`: clone and boot one VM.

    A repeated `request_id` makes no second VM.
    """

    request_id: RequestId
    epoch: Epoch = Field(description="Leader epoch of the sender; stale epochs are refused.")
    pooled: bool = Field(
        default=False,
        description="Make a VM for the warm pool (booted, checked, paused: state `pooled`); a plain create "
                    "takes a pooled VM of this host first (resume, check again, ready).",
    )
    version: VersionId | None = Field(
        default=None,
        description="Clone from this template version (it must be ready on the host, else `unavailable`); "
                    "None: the host's template domain itself. A pooled VM is taken only when its version matches.",
    )


class DestroyVm(Message):
    """`fleet.prov.destroy`: destroy one of our VMs (idempotent: already gone is fine)."""

    vm: Name
    request_id: RequestId
    epoch: Epoch


class StartDrain(Message):
    """`fleet.prov.<host>.drain`: take one of this host's VMs out of service (sent by the leader scaler).

    The provisioner, the only writer of VM state, marks it `draining` and publishes `fleet.vm.draining`
    with `deadline_s`: that one event is what every balancer drains on. Idempotent: a VM already
    draining is answered as it is. Answered with the VM's `VmRecord`.
    """

    vm: Name
    request_id: RequestId
    epoch: Epoch
    deadline_s: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 30.0


class ListVms(Message):
    """`fleet.prov.list`: every provisioner answers with the VMs libvirt says it owns."""


class VmRecord(Model):
    """One VM as its provisioner knows it."""

    vm: Name
    state: VmState
    address: Address | None = None
    since: datetime
    request_id: RequestId | None = None
    host: Name | None = None
    uuid: VmUuid | None = None
    identity: bool = Field(default=False, description="As in `VmStateChanged`: responses carry `uuid` to check.")
    paused: bool = Field(default=False, description="libvirt reports the domain paused: it serves nothing.")
    version: VersionId | None = Field(default=None, description="The template version it was cloned from.")


class VmList(Model):
    """Result of a `ListVms` reply: one host's VMs (create and destroy reply with a `VmRecord`)."""

    host: Name
    vms: Annotated[list[VmRecord], Field(max_length=2000)] = []
    max_vms: Annotated[int, Field(ge=0, le=1000)] | None = Field(
        None, description="The host's ceiling: the leader places creates on hosts with room (None: unknown)."
    )
    free_memory_mib: MemoryMib | None = Field(
        None, description="Memory libvirt says is free for new guests on this host, in MiB (None: not read)."
    )
    cpus: Cpus | None = Field(None, description="The host's logical CPUs, as libvirt counts them (None: not read).")
    vm_memory_mib: Annotated[int, Field(ge=1, le=MEMORY_MIB_MAX)] | None = Field(
        None, description="Memory one VM of the template is given (its `<memory>`, MiB rounded up; None: not read)."
    )
    vm_vcpus: Cpus | None = Field(None, description="vCPUs one VM of the template is given (its `<vcpu>`).")
    epoch: Epoch = Field(
        0, description="The newest leader epoch this provisioner has obeyed (it refuses older ones): a leader "
        "whose lease holds less, because the store that kept it was lost, moves above it."
    )
