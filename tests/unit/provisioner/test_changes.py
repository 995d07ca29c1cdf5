"""The change values a VM's steps hand back, and the table's pure rule for applying them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.provisioner.core.changes import Advance, Learn, applied
from services.provisioner.core.machine import requested
from shared.contract.events import VmState

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(seconds=3)


def test_an_advance_moves_the_state_with_its_address_and_learnt_facts() -> None:
    """Advance sets the state, the time, the address, and any facts it carries, in one step."""
    facts = Learn(macs=("52:54:00:00:00:01",), volumes=("/p/v.qcow2",), uuid="u-1", identity=True)
    cloning = applied(requested("qf-1", "r1", T0), Advance(VmState.CLONING, learnt=facts), T1)
    assert cloning is not None
    assert (cloning.state, cloning.since, cloning.macs, cloning.volumes, cloning.uuid, cloning.identity) == (
        VmState.CLONING, T1, ("52:54:00:00:00:01",), ("/p/v.qcow2",), "u-1", True)
    booting = applied(cloning, Advance(VmState.BOOTING), T1)
    assert booting is not None
    ready = applied(booting, Advance(VmState.READY, "10.0.0.5:443"), T1)
    assert ready is not None and (ready.state, ready.address) == (VmState.READY, "10.0.0.5:443")


def test_an_advance_the_state_machine_forbids_is_refused_not_raised() -> None:
    """A step asking for a state the VM can no longer reach (it moved on) gets None: the table skips it."""
    assert applied(requested("qf-1", "r1", T0), Advance(VmState.READY, "10.0.0.5:443"), T1) is None


def test_learning_keeps_the_state_and_every_fact_not_given() -> None:
    """Learn changes only the facts it names: no new state, no new time, the rest as it was."""
    entry = requested("qf-1", "r1", T0, address="127.0.0.1:1", pooled=True)
    paused = applied(entry, Learn(paused=True), T1)
    assert paused is not None
    assert (paused.state, paused.since, paused.paused, paused.address, paused.pooled) == (
        VmState.REQUESTED, T0, True, "127.0.0.1:1", True)
