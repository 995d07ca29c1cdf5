"""The one error type that crosses the bus, and how validation errors are put into words."""

from __future__ import annotations

from pydantic import ValidationError

from shared.contract.base import ErrorCode

_MAX_ERRORS = 5


class BusError(Exception):
    """A command failed for a reason the caller should see (`code` and a person-readable message).

    Handlers raise it to answer with an error reply; `Bus.request` raises it when a reply says so.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message

    def __repr__(self) -> str:
        return f"BusError({self.code.value}: {self.message})"


class NoResponders(BusError):
    """Nobody subscribes to the subject (NATS said so at once): the request reached no one.

    Unlike a timeout, nothing can have acted on it, so a caller may retry without counting a failure.
    """


def describe_validation_error(error: ValidationError) -> str:
    """`field: problem; …` without echoing the input values (they may be huge or hostile)."""
    parts = []
    for item in error.errors(include_input=False, include_url=False)[:_MAX_ERRORS]:
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    more = error.error_count() - _MAX_ERRORS
    if more > 0:
        parts.append(f"and {more} more problem(s)")
    return "; ".join(parts)
