"""How many copies JetStream keeps of quicfleet's buckets: the setting, and the refusal put into words."""

from __future__ import annotations

import pytest
from nats.js.errors import APIError

from shared.kv import ReplicasUnavailable, placement_problem, stream_name
from shared.settings import ServiceSettings, SettingsError, load_settings


def test_replicas_default_to_one_and_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """QUICFLEET_NATS_REPLICAS is 1 unless set; 3 is taken as given."""
    monkeypatch.delenv("QUICFLEET_NATS_REPLICAS", raising=False)
    assert load_settings(ServiceSettings).nats_replicas == 1
    monkeypatch.setenv("QUICFLEET_NATS_REPLICAS", "3")
    assert load_settings(ServiceSettings).nats_replicas == 3


@pytest.mark.parametrize("value", ["0", "6", "three"])
def test_replicas_outside_one_to_five_are_refused_by_name(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """JetStream keeps 1 to 5 copies: anything else is a bad setting naming QUICFLEET_NATS_REPLICAS."""
    monkeypatch.setenv("QUICFLEET_NATS_REPLICAS", value)
    with pytest.raises(SettingsError, match="QUICFLEET_NATS_REPLICAS"):
        load_settings(ServiceSettings)


@pytest.mark.parametrize(("code", "words"), [
    (10005, "no suitable peers for placement"),
    (10023, "insufficient resources"),
    (10074, "replicas > 1 not supported in non-clustered mode"),
])
def test_placement_refusals_name_the_bucket_the_count_and_the_setting(code: int, words: str) -> None:
    """A JetStream placement error becomes one sentence with the bucket, the count, the server's words and the fix."""
    problem = placement_problem("quicfleet_scaler", 3, APIError(code=400, err_code=code, description=words))
    assert problem is not None
    assert "3 replicas of KV bucket 'quicfleet_scaler'" in problem and words in problem
    assert "QUICFLEET_NATS_REPLICAS" in problem


def test_other_jetstream_errors_are_not_placement_problems() -> None:
    """A stream-name clash (10058) is not about replicas, so it is not dressed up as one."""
    assert placement_problem("b", 3, APIError(code=400, err_code=10058, description="stream name in use")) is None


def test_refusal_is_a_setting_error_that_exits_2() -> None:
    """ReplicasUnavailable exits the service with 2, the code `quicfleet up` leaves down, and reads as its message."""
    refusal = ReplicasUnavailable("too many")
    assert isinstance(refusal, SettingsError) and refusal.code == 2 and str(refusal) == "too many"


def test_a_bucket_is_the_stream_kv_bucket() -> None:
    """The stream behind bucket `x` is `KV_x`, the one whose num_replicas is raised."""
    assert stream_name("quicfleet_scaler") == "KV_quicfleet_scaler"
