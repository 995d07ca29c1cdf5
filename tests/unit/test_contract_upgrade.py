"""Rolling upgrades: an older reader accepts a newer writer's events; commands and replies stay strict."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from shared.bus import decode, encode
from shared.contract import commands, draining, events, load, status
from shared.contract.base import Event, EventPart, Message, utcnow
from shared.errors import BusError


class NewerVmStateChanged(events.VmStateChanged):
    """What a later release might publish: the same event with a field this reader has never heard of."""

    zone: str = "eu-1"


def test_an_older_reader_accepts_a_newer_event_and_keeps_what_it_knows() -> None:
    """A fleet.vm.ready with an added field decodes in this release, every known field intact."""
    newer = NewerVmStateChanged(vm="qf-1", state=events.VmState.READY, address="10.0.0.5:443", host="kvm1")
    older = decode(events.VmStateChanged, encode(newer))
    assert (older.vm, older.state, older.address, older.host) == ("qf-1", events.VmState.READY, "10.0.0.5:443", "kvm1")
    assert "zone" not in older.model_dump()


def test_a_field_added_inside_an_event_part_is_dropped_too() -> None:
    """A load report whose per-VM entries and histogram carry new fields still decodes."""
    report = load.BalancerReported(balancer="b1", started_at=utcnow(), backends=[load.BackendLoad(vm="qf-1")])
    data = json.loads(encode(report))
    data["backends"][0]["new_counter"] = 3
    data["backends"][0]["latency"]["new_bucket_scheme"] = "log"
    data["quic_version"] = "v2"
    assert decode(load.BalancerReported, json.dumps(data).encode()).backends[0].vm == "qf-1"


@pytest.mark.parametrize("model", [
    events.VmStateChanged(vm="qf-1", state=events.VmState.READY),
    events.ScalingDecided(current=1, desired=2, reason="load"),
    load.FleetLoaded(window_s=10),
    draining.BackendDrained(vm="qf-1", balancer="b1"),
], ids=lambda m: type(m).__name__)
def test_every_event_is_tolerant(model: BaseModel) -> None:
    """Each published event class ignores an unknown field rather than dropping the message."""
    assert isinstance(model, Event)
    data = json.loads(encode(model)) | {"surprise": 1}
    assert decode(type(model), json.dumps(data).encode()) == model


@pytest.mark.parametrize("model", [commands.ScaleFleet(replicas=1), status.DesiredState(desired=1)],
                         ids=lambda m: type(m).__name__)
def test_commands_and_replies_still_refuse_unknown_fields(model: Message) -> None:
    """A command or reply with a field this release does not know is `invalid`, as before."""
    assert not isinstance(model, EventPart)
    with pytest.raises(BusError):
        decode(type(model), json.dumps(json.loads(encode(model)) | {"surprise": 1}).encode())
