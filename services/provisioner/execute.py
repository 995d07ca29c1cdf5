"""Carry out a clone plan and tear VMs down: blocking steps over the `Hypervisor` port.

Order as in virt-manager: define first (a bad XML fails before any storage exists), then create
the volumes, then start. A failure undoes what was done, newest first, so a failed clone leaves
nothing behind; teardown is idempotent so it is also the cleanup for half-made clones.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from services.provisioner.core.clone import ClonePlan
from services.provisioner.core.ports import Hypervisor, HypervisorError
from services.provisioner.core.reconcile import Disks

log = structlog.get_logger("provisioner.execute")


def define_and_create_storage(hv: Hypervisor, plan: ClonePlan) -> None:
    """Define the domain and make its volumes; on failure remove whatever was made, then raise."""
    hv.define(plan.domain_xml)
    made: list[str] = []
    try:
        for volume in plan.volumes:
            path = hv.create_volume(volume)
            made.append(path)
            if path != volume.path:
                raise HypervisorError(f"volume {volume.name} was created at {path}, not at {volume.path} as planned")
    except BaseException:
        teardown(hv, plan.name, tuple(made))
        raise


def start(hv: Hypervisor, plan: ClonePlan) -> None:
    """Start the defined clone; on failure remove domain and volumes, then raise."""
    try:
        hv.start(plan.name)
    except BaseException:
        teardown(hv, plan.name, tuple(v.path for v in plan.volumes))
        raise


def teardown(hv: Hypervisor, name: str, volumes: tuple[str, ...]) -> list[str]:
    """Power off, undefine, delete volumes; each step runs even if an earlier one failed.

    Returns the problems met (empty when everything is gone), so the caller can report them.
    """
    problems: list[str] = []
    steps: tuple[tuple[str, Callable[[str], bool]], ...] = (("stop", hv.stop), ("undefine", hv.undefine))
    for step, call in steps:
        try:
            call(name)
        except HypervisorError as error:
            problems.append(f"{step} {name}: {error}")
    for path in volumes:
        try:
            hv.delete_volume(path)
        except HypervisorError as error:
            problems.append(f"delete {path}: {error}")
    if problems:
        log.warning("vm.teardown_incomplete", vm=name, problems=problems)
    return problems


def clone_disks(hv: Hypervisor, template: str) -> Disks:
    """The volumes of the pools clones are made in; none (so no disk is deleted) while the template is unreadable."""
    try:
        sources = hv.template(template).sources
        pools = frozenset(source.pool for source in sources.values())
        listed = tuple(volume for pool in sorted(pools) for volume in hv.list_volumes(pool))
    except HypervisorError as error:
        log.info("volume.cleanup_skipped", error=str(error))
        return Disks(frozenset(), (), frozenset())
    return Disks(pools, listed, frozenset(sources))
