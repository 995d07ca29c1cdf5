"""The contract's models, envelope and subjects."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from shared.bus import decode, encode, parse_reply
from shared.contract import commands, draining, events, load, provisioning, status
from shared.contract.base import ErrorCode, Message, utcnow
from shared.contract.policy import PolicyPatch, ScalingPolicy
from shared.contract.subjects import Subjects
from shared.endpoints import error_reply, ok_reply
from shared.errors import BusError

EXAMPLES: list[BaseModel] = [
    commands.ScaleFleet(replicas=3),
    commands.GetStatus(),
    commands.DrainVm(vm="qf-abc123"),
    PolicyPatch(max_replicas=5),
    events.VmStateChanged(vm="qf-1", state=events.VmState.READY, address="127.0.0.1:8443", request_id="r-1"),
    events.ScalingDecided(current=1, desired=2, reason="load above target", signal="outstanding", observed=12.0),
    load.BalancerReported(
        balancer="b1", started_at=utcnow(), backends=[load.BackendLoad(vm="qf-1", requests=5)]
    ),
    load.FleetLoaded(window_s=10, vms=[load.VmLoad(vm="qf-1", rps=3.5)]),
    provisioning.CreateVm(request_id="r-2", epoch=1),
    provisioning.DestroyVm(vm="qf-1", request_id="r-3", epoch=1),
    provisioning.VmList(host="h1", vms=[provisioning.VmRecord(vm="qf-1", state="ready", since=utcnow())]),
    provisioning.StartDrain(vm="qf-1", request_id="r-4", epoch=1),
    draining.BackendDrained(vm="qf-1", balancer="b1"),
    status.DesiredState(desired=2),
    status.FleetStatus(desired=1, policy=ScalingPolicy()),
]


@pytest.mark.parametrize("model", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_model_round_trips_through_json(model: BaseModel) -> None:
    """Encoding a model and decoding the bytes gives back an equal model."""
    assert decode(type(model), encode(model)) == model


@pytest.mark.parametrize("model", [m for m in EXAMPLES if isinstance(m, Message)], ids=lambda m: type(m).__name__)
def test_messages_refuse_unknown_fields(model: BaseModel) -> None:
    """An extra field in any message is an `invalid` error, not silently dropped."""
    data = json.loads(encode(model)) | {"surprise": 1}
    with pytest.raises(BusError) as caught:
        decode(type(model), json.dumps(data).encode())
    assert caught.value.code is ErrorCode.INVALID
    assert "surprise" in caught.value.message


def test_ok_reply_envelope_unwraps_to_result() -> None:
    """An ok envelope carries the result model, and parse_reply gives it back."""
    body = ok_reply(status.DesiredState(desired=4))
    assert json.loads(body)["ok"] is True
    assert parse_reply(body, status.DesiredState).desired == 4


def test_error_reply_envelope_raises_with_code_and_headers() -> None:
    """An error envelope raises BusError with its code; the micro headers carry code and message."""
    body, headers = error_reply(ErrorCode.NOT_FOUND, "no VM named x")
    assert json.loads(body) == {"ok": False, "error": {"code": "not_found", "message": "no VM named x"}}
    assert headers == {"Nats-Service-Error": "no VM named x", "Nats-Service-Error-Code": "404"}
    with pytest.raises(BusError) as caught:
        parse_reply(body, status.DesiredState)
    assert caught.value.code is ErrorCode.NOT_FOUND


def test_scale_refuses_non_integers_and_absurd_sizes() -> None:
    """`replicas` must be a real integer within the hard ceiling."""
    for bad in ['{"replicas": "3"}', '{"replicas": 2.5}', '{"replicas": -1}', '{"replicas": 10000000000}', "{}"]:
        with pytest.raises(BusError) as caught:
            decode(commands.ScaleFleet, bad.encode())
        assert caught.value.code is ErrorCode.INVALID


def test_policy_patch_keeps_constraints_and_checks_bounds() -> None:
    """A patch validates each field like the policy does, and a merge that breaks min <= max fails."""
    assert PolicyPatch(max_replicas=3).apply(ScalingPolicy()).max_replicas == 3
    with pytest.raises(BusError):
        decode(PolicyPatch, b'{"target": 0}')
    with pytest.raises(ValueError, match="min_replicas"):
        PolicyPatch(min_replicas=50).apply(ScalingPolicy())


def test_subjects_follow_the_prefix() -> None:
    """Every subject starts with the configured prefix; bad prefixes are refused."""
    subjects = Subjects("blue")
    assert subjects.cmd_scale == "blue.cmd.scale"
    assert subjects.vm(events.VmState.READY) == "blue.vm.ready"
    assert subjects.vm_all == "blue.vm.*"
    assert subjects.prov_destroy("host-1") == "blue.prov.host-1.destroy"
    with pytest.raises(ValueError):
        subjects.prov_destroy("a.b")
    with pytest.raises(ValueError):
        Subjects("bad prefix")


@given(st.binary(max_size=512))
def test_random_bytes_are_invalid_never_a_crash(data: bytes) -> None:
    """Any byte string either parses or raises BusError(invalid); nothing else escapes."""
    for model in (commands.ScaleFleet, commands.DrainVm, PolicyPatch, events.VmStateChanged):
        try:
            decode(model, data)
        except BusError as error:
            assert error.code is ErrorCode.INVALID


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.sampled_from(["replicas", "vm", "v", "x", "min_replicas", "target"]), JSON, max_size=4))
def test_random_json_objects_are_invalid_never_a_crash(body: dict[str, object]) -> None:
    """Structured but wrong JSON is refused with a message that names a field, without echoing values."""
    for model in (commands.ScaleFleet, commands.DrainVm, PolicyPatch):
        try:
            decode(model, json.dumps(body).encode())
        except BusError as error:
            assert error.code is ErrorCode.INVALID
            assert error.message


def test_oversized_payload_is_refused_before_parsing() -> None:
    """A payload over the size limit is refused with a message naming the limit."""
    with pytest.raises(BusError, match="limit"):
        decode(commands.GetStatus, b" " * (300 * 1024))


def test_a_vm_uuid_must_be_a_lower_case_uuid() -> None:
    """The identity a VM proves is a canonical lower-case UUID; anything else is refused at the edge."""
    good = "0f8e3c1a-2b4d-4e6f-8a9b-0c1d2e3f4a5b"
    assert events.VmStateChanged(vm="qf-1", state="ready", uuid=good, identity=True).uuid == good
    for bad in (good.upper(), good[:-1], "x" * 36, good + "\n"):
        with pytest.raises(ValidationError):
            events.VmStateChanged(vm="qf-1", state="ready", uuid=bad)


@pytest.mark.parametrize(
    ("signal", "target"),
    [("outstanding", 1e-308), ("outstanding", 0.05), ("rps", 1e8), ("p95_latency", 0.0001), ("p95_latency", 120)],
)
def test_a_target_outside_its_signals_range_is_refused(signal: str, target: float) -> None:
    """A schema-valid but absurd target (1e-308 outstanding would drive any fleet to max) is refused, patch or not."""
    with pytest.raises(ValidationError, match="outside"):
        ScalingPolicy(signal=signal, target=target)
    with pytest.raises(ValueError, match="outside"):
        PolicyPatch(signal=signal, target=target).apply(ScalingPolicy())


def test_targets_inside_each_signals_range_are_kept() -> None:
    """The defaults and ordinary targets per signal pass."""
    assert ScalingPolicy().target == 8.0
    assert ScalingPolicy(signal="rps", target=250).target == 250
    assert ScalingPolicy(signal="p95_latency", target=0.2).target == 0.2
