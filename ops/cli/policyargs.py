"""`policy set key=value …`: turn command-line words into a `PolicyPatch`, or say what is wrong.

The contract's policy fields are strict (an int field refuses the string "5"), so each value is
converted to its field's type here first; what the scaler then refuses (e.g. min above max)
comes back as its `invalid` reply.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from shared.contract.commands import PolicyPatch
from shared.contract.policy import PolicyPatchBase, ScalingPolicy
from shared.errors import describe_validation_error

_NUMBER_WORDS = {int: "a whole number", float: "a number"}


def policy_fields() -> list[str]:
    """The names a user may set, in the policy's own order."""
    return list(ScalingPolicy.model_fields)


def parse_assignment(pair: str) -> tuple[str, Any]:
    """One `key=value` word as (field name, value of the field's type); ValueError when it is not one."""
    key, sep, raw = pair.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise ValueError(f"{pair!r} is not key=value")
    field = ScalingPolicy.model_fields.get(key)
    if field is None:
        raise ValueError(f"unknown policy field {key!r}; known fields: {', '.join(policy_fields())}")
    return key, _convert(key, raw.strip(), field.annotation)


def _convert(key: str, raw: str, kind: Any) -> Any:
    if kind not in _NUMBER_WORDS:
        return raw
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{key}: {raw!r} is not {_NUMBER_WORDS[kind]}") from None


def parse_patch(pairs: list[str]) -> PolicyPatchBase:
    """All words as one patch; ValueError naming every field that is malformed or out of range."""
    if not pairs:
        raise ValueError(f"nothing to set; give key=value pairs, keys: {', '.join(policy_fields())}")
    values = dict(parse_assignment(pair) for pair in pairs)
    try:
        return PolicyPatch.model_validate(values)
    except ValidationError as error:
        raise ValueError(describe_validation_error(error)) from None
