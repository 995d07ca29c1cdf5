"""The warm pool's pure rules (`core/warmpool.py`): which VM a create takes, the taken entry and tag, adoption."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.provisioner.core.machine import VmEntry, adopted, transition
from services.provisioner.core.ports import DomainView
from services.provisioner.core.tags import VmTag, parse_tag, tag_xml
from services.provisioner.core.warmpool import adopt_as, adopted_entry, pick, retagged, taken
from shared.contract.events import VmState

T0 = datetime(2026, 1, 1, tzinfo=UTC)
S = VmState
TAG = VmTag("f1", "p1", T0, "h1", "127.0.0.1:1", pooled=True)


def _pooled(name: str, at: datetime) -> VmEntry:
    return replace(adopted(name, S.POOLED, at, TAG), paused=True)


def test_a_create_takes_the_most_recently_pooled_vm_never_one_being_removed() -> None:
    """`pick` hands out the pooled VM paused last, skips busy ones, and finds none among other states."""
    entries = {
        "qf-old": _pooled("qf-old", T0),
        "qf-new": _pooled("qf-new", T0 + timedelta(seconds=5)),
        "qf-ready": adopted("qf-ready", S.READY, T0 + timedelta(seconds=9), TAG),
    }
    assert pick(entries, ()) == "qf-new"
    assert pick(entries, {"qf-new"}) == "qf-old"
    assert pick({"qf-ready": entries["qf-ready"]}, ()) is None


def test_a_taken_entry_boots_unpaused_with_its_new_request_id_and_only_a_static_address_kept() -> None:
    """The taken entry is booting, out of the pool, unpaused, the take's request id; a lease address is dropped."""
    pooled = _pooled("qf-1", T0)
    static = taken(pooled, "r9", T0, static=True)
    assert (static.state, static.request_id, static.pooled, static.paused, static.address) == (
        S.BOOTING, "r9", False, False, "127.0.0.1:1")
    assert taken(pooled, "r9", T0, static=False).address is None


def test_the_pool_mark_round_trips_and_a_take_clears_it_keeping_the_rest() -> None:
    """`<qf:pool>1</qf:pool>` parses back; the take's tag drops it, carries the new request id and the higher epoch."""
    tag = replace(TAG, volumes=("/p/a.qcow2",), epoch=3, identity=True)
    assert parse_tag(tag_xml(tag)) == tag and "<pool>1</pool>" in tag_xml(tag)
    assert retagged(tag, "r9", 5) == replace(tag, request_id="r9", epoch=5, pooled=False)
    assert retagged(tag, "r9", 1).epoch == 3


def test_found_domains_are_adopted_pooled_only_when_of_the_pool_and_paused() -> None:
    """Pool tag and paused: pooled (its age counted from its creation); pool tag running, or no pool tag: booting."""
    assert adopt_as(DomainView("qf-1", True, TAG, paused=True)) is S.POOLED
    assert adopt_as(DomainView("qf-1", True, TAG, paused=False)) is S.BOOTING
    assert adopt_as(DomainView("qf-1", True, replace(TAG, pooled=False), paused=True)) is S.BOOTING
    entry = adopted_entry(DomainView("qf-1", True, TAG, paused=True), T0 + timedelta(hours=1))
    assert (entry.state, entry.since, entry.paused, entry.pooled) == (S.POOLED, T0, True, True)


def test_a_pooled_vm_cannot_become_ready_without_booting_again() -> None:
    """The state machine lets a pooled VM only boot again, fail or be destroyed."""
    pooled = _pooled("qf-1", T0)
    assert transition(pooled, S.BOOTING, T0).state is S.BOOTING
    with pytest.raises(ValueError, match="cannot become ready"):
        transition(pooled, S.READY, T0)
