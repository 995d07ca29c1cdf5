"""Settings shared by every service, read from `QUICFLEET_*` environment variables."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.contract.subjects import PREFIX_PATTERN

ENV_PREFIX = "QUICFLEET_"


def _default_instance() -> str:
    return socket.gethostname().split(".")[0][:40] or "local"


class ServiceSettings(BaseSettings):
    """What every service needs: where NATS is, how to log in, and how to log."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    nats_url: str = Field("nats://127.0.0.1:4222", description="NATS server URL(s), comma-separated.")
    nats_user: str | None = Field(None, description="NATS user name (with nats_password or nats_password_file).")
    nats_password: SecretStr | None = Field(None, description="NATS password.")
    nats_password_file: Path | None = Field(
        None, description="File holding the NATS password (when nats_password is unset): keeps it out of the "
                          "environment.",
    )
    nats_inbox_prefix: str = Field(
        "_INBOX", pattern=r"^[A-Za-z0-9_$-]+$",
        description="First token of this client's reply subjects; `quicfleet up` gives each user its own "
                    "(`_INBOX_<user>`), so that no user may subscribe to another's replies.",
    )
    nats_token: SecretStr | None = Field(None, description="NATS token.")
    nats_creds: Path | None = Field(None, description="NATS credentials file (JWT + nkey seed).")
    nats_tls_ca: Path | None = Field(None, description="CA bundle to verify a tls:// NATS server.")
    nats_replicas: int = Field(
        1, ge=1, le=5,
        description="Copies JetStream keeps of each bucket quicfleet makes: the number of NATS nodes (1, 3 or 5).",
    )
    subject_prefix: str = Field("fleet", description="First token of every subject (two fleets, one NATS).")
    instance: str = Field(default_factory=_default_instance, description="This replica's name in logs and reports.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Lowest level logged.")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="`auto`: console on a terminal, JSON otherwise."
    )
    shutdown_grace_s: float = Field(10.0, gt=0, le=600, description="How long SIGTERM may spend draining.")

    @field_validator("subject_prefix")
    @classmethod
    def _prefix_ok(cls, value: str) -> str:
        if not PREFIX_PATTERN.match(value):
            raise ValueError("must be dot-separated tokens of letters, digits, '_' or '-'")
        return value

    @field_validator("nats_password_file")
    @classmethod
    def _password_file_ok(cls, value: Path | None) -> Path | None:
        if value is not None and not os.access(value, os.R_OK):
            raise ValueError(f"{value} is not a file this user may read")
        return value

    @field_validator("nats_url")
    @classmethod
    def _urls_ok(cls, value: str) -> str:
        for url in value.split(","):
            if not url.strip().startswith(("nats://", "tls://", "ws://", "wss://")):
                raise ValueError(f"{url.strip()!r} is not a nats://, tls://, ws:// or wss:// URL")
        return value


S = TypeVar("S", bound=ServiceSettings)


class SettingsError(SystemExit):
    """Raised at start when the environment holds a bad value; the message names the variable."""


def load_settings(cls: type[S]) -> S:
    """Read settings from the environment or exit with a message naming each bad variable."""
    try:
        return cls()
    except ValidationError as error:
        raise SettingsError(describe_settings_error(error)) from None


def describe_settings_error(error: ValidationError) -> str:
    """One line per bad variable: `QUICFLEET_X: what is wrong`."""
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "?"
        lines.append(f"{ENV_PREFIX}{field.upper()}: {item['msg']}")
    return "invalid settings:\n  " + "\n  ".join(lines)
