"""`policy set key=value` parsing into a policy patch."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ops.cli.policyargs import parse_assignment, parse_patch
from shared.contract.policy import ScalingPolicy, Signal


def test_values_take_their_field_types() -> None:
    """Integers, floats and enum words become the policy's own types."""
    patch = parse_patch(["max_replicas=4", "target=2.5", "signal=rps", "cooldown-s=30"])
    policy = patch.apply(ScalingPolicy())
    assert (policy.max_replicas, policy.target, policy.signal, policy.cooldown_s) == (4, 2.5, Signal.RPS, 30.0)


def test_unknown_field_is_named_with_the_known_ones() -> None:
    """A key that is not a policy field is refused and the message lists the valid keys."""
    with pytest.raises(ValueError, match=r"unknown policy field 'replicas'.*min_replicas"):
        parse_assignment("replicas=3")


@pytest.mark.parametrize(("word", "message"), [
    ("min_replicas=two", "min_replicas: 'two' is not a whole number"),
    ("target=fast", "target: 'fast' is not a number"),
    ("target", "is not key=value"),
    ("=3", "is not key=value"),
])
def test_malformed_words_are_refused(word: str, message: str) -> None:
    """Words that are not key=value, or values of the wrong type, are refused with a clear message."""
    with pytest.raises(ValueError, match=message):
        parse_patch([word])


def test_out_of_range_values_are_refused_before_sending() -> None:
    """Values outside the contract's bounds are refused locally, naming the field."""
    with pytest.raises(ValueError, match="tolerance"):
        parse_patch(["tolerance=7"])


def test_empty_patch_is_refused() -> None:
    """`policy set` with nothing to set says which keys exist."""
    with pytest.raises(ValueError, match="nothing to set"):
        parse_patch([])


@given(st.lists(st.text(max_size=40), max_size=5))
def test_any_words_give_a_patch_or_a_value_error(words: list[str]) -> None:
    """Whatever a user types, parsing yields a patch or a ValueError with a message, never another error."""
    try:
        parse_patch(words)
    except ValueError as error:
        assert str(error)


@given(st.sampled_from(sorted(ScalingPolicy.model_fields)), st.integers(min_value=-(10**30), max_value=10**30))
def test_absurd_numbers_are_refused_or_in_bounds(field: str, number: int) -> None:
    """Huge or negative numbers for any field are refused locally, or accepted only within the contract's bounds."""
    try:
        patch = parse_patch([f"{field}={number}"])
    except ValueError:
        return
    assert getattr(patch, field) is not None
    assert 0 <= number <= 10**9, "every policy bound is within [0, 1e9]"
