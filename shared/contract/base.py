"""Base model and the reply envelope every command answers with.

Every command and reply on the bus is a pydantic model that forbids unknown fields and bounds
every value, so a hostile or confused publisher gets a clear `invalid` reply instead of reaching
service code with surprising data. Events (`Event`, and the `EventPart`s inside them) ignore
fields they do not know instead: a newer release may add a field to an event, and the replicas
not yet upgraded keep reading it, so a rolling upgrade need not follow any order. Known fields
stay bounded and typed either way.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

SCHEMA_VERSION: Literal[1] = 1
MAX_PAYLOAD_BYTES = 256 * 1024
"""Largest message body any service accepts; bigger ones are refused before parsing."""

Name = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
"""A VM, balancer or service name: short, printable, safe in a NATS subject and libvirt."""
RequestId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
Address = Annotated[str, StringConstraints(min_length=3, max_length=80, pattern=r"^[\[\]0-9A-Za-z.:_-]+:\d{1,5}$")]
"""`host:port` (IPv6 hosts in brackets)."""
Reason = Annotated[str, StringConstraints(max_length=500)]
VmUuid = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
"""A libvirt domain UUID, lower case: the guest sees it as its SMBIOS system UUID."""
IDENTITY_HEADER = "x-quicfleet-vm"
"""The response header in which a VM that proves its identity sends its domain UUID."""


def utcnow() -> datetime:
    """Return an aware UTC timestamp (RFC 3339 once serialised)."""
    return datetime.now(UTC)


class Model(BaseModel):
    """Strict base: unknown fields are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class Message(Model):
    """A bus message that carries the contract's schema version."""

    v: Literal[1] = Field(default=SCHEMA_VERSION, description="Schema version of the message.")


class EventPart(BaseModel):
    """A model carried inside an event: unknown fields are dropped (a newer writer's), instances immutable."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=False)


class Event(EventPart):
    """A published fact (no reply): tolerant of fields added by a newer release, like `EventPart`."""

    v: Literal[1] = Field(default=SCHEMA_VERSION, description="Schema version of the message.")


class ErrorCode(StrEnum):
    """Reason classes of a failed command, as in the contract."""

    INVALID = "invalid"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


ERROR_HEADER_CODES: dict[ErrorCode, str] = {
    ErrorCode.INVALID: "400",
    ErrorCode.NOT_FOUND: "404",
    ErrorCode.CONFLICT: "409",
    ErrorCode.UNAVAILABLE: "503",
    ErrorCode.INTERNAL: "500",
}
"""The `Nats-Service-Error-Code` header value for each error code (micro uses HTTP-like codes)."""


class ErrorBody(Model):
    """What went wrong, in words a person can act on."""

    code: ErrorCode
    message: Annotated[str, StringConstraints(max_length=2000)]


class OkReply(Model):
    """A successful command reply."""

    ok: Literal[True] = True
    result: dict[str, Any]


class ErrorReply(Model):
    """A failed command reply."""

    ok: Literal[False] = False
    error: ErrorBody


Reply = Annotated[OkReply | ErrorReply, Field(discriminator="ok")]
