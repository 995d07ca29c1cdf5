"""What a VM's steps want done to its entry, as values: the fleet's table is the one that applies them.

A boot, a take or an adoption runs for seconds and learns things along the way (its MACs and
volumes, its address, that it answered). It does not write the table: each step *yields* one of
these values and the table (`table.VmTable.apply`) applies it and publishes the event, so one
writer keeps the state machine's order and every `fleet.vm.*` event, and data flows one way
(table → step: the inputs at the start; step → table: changes).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import datetime

from services.provisioner.core.machine import VmEntry, can_become, transition
from shared.contract.events import VmState


@dataclass(frozen=True)
class Learn:
    """Facts about the VM that are no news on their own (published with its next state); None keeps the old.

    They go into the table before libvirt acts on them: a destroy mid-clone then knows the volumes
    to delete, and libvirt's SUSPENDED event of the pool's own pause finds the flag already set.
    """

    macs: tuple[str, ...] | None = None
    volumes: tuple[str, ...] | None = None
    uuid: str | None = None
    identity: bool | None = None
    paused: bool | None = None


@dataclass(frozen=True)
class Advance:
    """Move the VM to `to` (with the address it answered at, once known, and facts `learnt` on the way) and
    publish it."""

    to: VmState
    address: str | None = None
    learnt: Learn | None = None


@dataclass(frozen=True)
class Fail:
    """Give the VM up: `failed` with `reason`, torn down, `destroyed` (the table's removal does it)."""

    reason: str


Change = Advance | Learn | Fail


def applied(entry: VmEntry, change: Advance | Learn, now: datetime) -> VmEntry | None:
    """`entry` after `change`; None when the state machine refuses the step (the VM moved on meanwhile)."""
    if isinstance(change, Learn):
        return _learnt(entry, change)
    if not can_become(entry, change.to):
        return None
    known = entry if change.learnt is None else _learnt(entry, change.learnt)
    return transition(known, change.to, now, address=change.address)


def _learnt(entry: VmEntry, facts: Learn) -> VmEntry:
    return replace(entry, **{f.name: v for f in fields(facts) if (v := getattr(facts, f.name)) is not None})
