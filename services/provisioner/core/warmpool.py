"""The warm pool's rules, pure: which pooled VM a create takes, the taken entry and tag, what a found domain is.

A fresh clone answers only after its whole boot; a paused one that is resumed answers at once
(figures in docs/services/provisioner.md, "Warm pool"). The glue of a take (rewrite the tag,
resume, readiness again) is `services/provisioner/warmpool.py`; these are the choices it and
the fleet make, free of libvirt and of the clock (passed in).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace
from datetime import datetime

from services.provisioner.core.machine import VmEntry, adopted, transition
from services.provisioner.core.ports import DomainView
from services.provisioner.core.tags import VmTag
from shared.contract.events import VmState

TAKE_FAILED = "taken from the warm pool but did not answer again"
"""The start of the reason a taken VM fails with (the rest says what was seen)."""


def pick(entries: Mapping[str, VmEntry], busy: Collection[str], version: str | None = None) -> str | None:
    """The pooled VM a plain create takes: the most recently pooled one (its DHCP lease and clock the freshest).

    None when the pool is empty; `busy` VMs (being removed) are never handed out, nor one of another
    template version than the create asks for (a rollout must not get an old VM out of the pool).
    """
    pooled = [
        e for e in entries.values() if e.state is VmState.POOLED and e.name not in busy and e.version == version
    ]
    return max(pooled, key=lambda e: (e.since, e.name)).name if pooled else None


def taken(entry: VmEntry, request_id: str, now: datetime, static: bool) -> VmEntry:
    """The pooled `entry` as create `request_id` took it: `booting`, out of the pool, the request id its own.

    It is marked unpaused before the resume, so libvirt's RESUMED event of it is no news; its address is
    found again (a lease may have changed while it slept) unless it is a static one, which it keeps.
    """
    booting = transition(entry, VmState.BOOTING, now)
    address = entry.address if static else None
    return replace(booting, request_id=request_id, pooled=False, paused=False, address=address)


def retagged(tag: VmTag, request_id: str | None, epoch: int) -> VmTag:
    """The tag of a taken VM: the take's request id and epoch, no longer of the pool (so it never goes back)."""
    return replace(tag, request_id=request_id, epoch=max(tag.epoch, epoch), pooled=False)


def adopt_as(view: DomainView) -> VmState:
    """What a running domain of ours found after a restart is adopted as.

    `pooled` when its tag says pool and libvirt says paused. Anything else is adopted `booting` and
    probed: a pool VM found running was stopped before it was paused (it goes back into the pool once
    it answers), and a VM whose tag no longer says pool was taken (it becomes `ready`).
    """
    return VmState.POOLED if view.tag is not None and view.tag.pooled and view.paused else VmState.BOOTING


def adopted_entry(view: DomainView, now: datetime) -> VmEntry:
    """The entry of a found domain; a pooled one counts its time in the pool from its creation (the
    pause time is not in the tag), so the scaler's `pool_max_age_s` recycles it early rather than late."""
    assert view.tag is not None
    state = adopt_as(view)
    if state is VmState.POOLED:
        return replace(adopted(view.name, state, view.tag.created_at, view.tag, view.macs, view.uuid), paused=True)
    return adopted(view.name, state, now, view.tag, view.macs, view.uuid)
