"""Paused VMs: libvirt's word that a domain is paused, kept on its entry as a plain fact.

A paused domain (`virsh suspend`, a hung guest, libvirt pausing it on a disk I/O error) is still
active as far as libvirt's lists go, so neither the lifecycle events that fail a VM nor reconcile
remove it; yet it serves nothing. The provisioner reports the fact (`paused` on `VmStateChanged`
and `VmRecord`) and leaves its meaning to the scaler: a paused ready VM is replaced like an
unhealthy one, while a `pooled` VM is paused on purpose (`warmpool.py`). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from services.provisioner.core.machine import RUNNING, VmEntry
from services.provisioner.core.ports import DomainEventKind, DomainView

PAUSABLE = RUNNING
"""States of a VM that runs in libvirt, so that a pause of it is news worth publishing (a pooled VM that someone
resumed by hand is reported so; the pauses the pool makes itself are set on the entry first, so they are no news)."""
_NEWS = {DomainEventKind.SUSPENDED: True, DomainEventKind.RESUMED: False}


def paused_by(kind: DomainEventKind) -> bool | None:
    """True for a pause, False for a resume, None for any other lifecycle event."""
    return _NEWS.get(kind)


def with_pause(entry: VmEntry | None, paused: bool) -> VmEntry | None:
    """`entry` with the new flag, or None when that is no news (no entry, not running, same flag)."""
    if entry is None or entry.state not in PAUSABLE or entry.paused is paused:
        return None
    return replace(entry, paused=paused)


def plan_pauses(
    views: Iterable[DomainView], before: Mapping[str, VmEntry], entries: Mapping[str, VmEntry]
) -> list[tuple[str, bool]]:
    """(name, paused) for each running entry whose flag the listing contradicts: a pause or a resume missed.

    `before` is the table as it was when the listing began: an entry whose flag an event changed
    since then holds newer news than the listing, and is left alone.
    """
    changes = []
    for view in views:
        entry = entries.get(view.name)
        if entry is None or entry.state not in PAUSABLE or entry.paused is view.paused:
            continue
        earlier = before.get(view.name)
        if earlier is None or earlier.paused is entry.paused:
            changes.append((view.name, view.paused))
    return sorted(changes)
