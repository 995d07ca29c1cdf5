"""Settings shared by every service: `QUICFLEET_*` environment variables over the TOML file.

Precedence, highest first: environment, the file's `[<service>]` section, its `[common]`
section, the defaults. `shared.configfile` reads and checks the file; this module feeds it to
pydantic-settings as one more source and names every bad value by where it came from.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shared.configfile import COMMON, ConfigFileError, config_path, read_config, suggest, unknown_keys
from shared.contract.subjects import PREFIX_PATTERN

ENV_PREFIX = "QUICFLEET_"
EXIT_BAD_SETTINGS = 2
"""The exit status of a service refused by its settings; the systemd units name it in
`RestartPreventExitStatus=`, and `quicfleet up` leaves such a service down: restarting cannot help."""
SETTINGS_GROUP = "quicfleet.settings"
"""Entry-point group naming each service's Settings class (pyproject.toml), so that a service can
tell another service's variable from a typo without importing that service."""
TOOL_VARIABLES = frozenset({
    "CONFIG", "NATS_AUTH", "NATS_AUTH_ROTATE", "IMAGE", "LAB_RECORDS", "TEMPLATE_BUILD_DIR", "TEMPLATE_KERNEL",
    "SKIP_E2E", "SKIP_DOCKER", "STACK_TEST", "CHAOS_LONG", "CHAOS_TABLE",
})
"""`QUICFLEET_*` names read by the operator tools and tests, not by a service (plus `BENCH_*`)."""
_FILE_VALUES: ContextVar[dict[str, Any] | None] = ContextVar("quicfleet_file_values", default=None)


class _FileSource(PydanticBaseSettingsSource):
    """The config file's values for the class being loaded (empty outside `load_settings`)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_FILE_VALUES.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in (_FILE_VALUES.get() or {}).items() if k in self.settings_cls.model_fields}


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

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment over the config file: the file is the baseline, a variable the override."""
        return init_settings, env_settings, dotenv_settings, _FileSource(settings_cls), file_secret_settings

    @classmethod
    def section(cls) -> str:
        """The config file section this class reads after `[common]`: `BalancerSettings` -> `balancer`."""
        if cls is ServiceSettings:
            return COMMON
        return cls.__name__.removesuffix("Settings").lower()

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
    """Raised at start when the environment or the file holds a bad value; the message names it."""


def load_settings(cls: type[S], config: Path | None = None, environ: Mapping[str, str] = os.environ) -> S:
    """Read settings from the environment over the config file, or exit naming each bad value.

    `config` is `--config`; without it `QUICFLEET_CONFIG`, then /etc/quicfleet/quicfleet.toml.
    `environ` is where those are looked up (the values themselves come from the process environment).
    """
    try:
        file = read_config(config_path(config, environ))
    except ConfigFileError as error:
        raise SettingsError(f"invalid settings:\n  {error}") from None
    section = cls.section()
    problems = unknown_keys(file, COMMON, ServiceSettings.model_fields)
    problems += unknown_keys(file, section, cls.model_fields) if section != COMMON else []
    if problems:
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems))
    values = file.values(section)
    token = _FILE_VALUES.set(values)
    try:
        return cls()
    except ValidationError as error:
        origins = {key: file.origin(section, key) for key in values if f"{ENV_PREFIX}{key.upper()}" not in environ}
        raise SettingsError(describe_settings_error(error, origins)) from None
    finally:
        _FILE_VALUES.reset(token)


def describe_settings_error(error: ValidationError, origins: Mapping[str, str] | None = None) -> str:
    """One line per bad value: `QUICFLEET_X: what is wrong`, or `file [section] x: …` for a file's."""
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "?"
        where = (origins or {}).get(field) or f"{ENV_PREFIX}{field.upper()}"
        lines.append(f"{where}: {item['msg']}")
    return "invalid settings:\n  " + "\n  ".join(lines)


def registered_settings() -> dict[str, type[ServiceSettings]]:
    """Every service's Settings class, by section, from the installed entry points (empty when not installed)."""
    found: dict[str, type[ServiceSettings]] = {}
    for point in entry_points(group=SETTINGS_GROUP):
        try:
            loaded = point.load()
        except (ImportError, AttributeError):
            continue
        if isinstance(loaded, type) and issubclass(loaded, ServiceSettings):
            found[point.name] = loaded
    return found


def known_setting_names(classes: Iterable[type[ServiceSettings]]) -> set[str]:
    """The field names of the given classes and of every installed service's Settings."""
    names = set(ServiceSettings.model_fields)
    for cls in [*classes, *registered_settings().values()]:
        names |= set(cls.model_fields)
    return names


def unknown_variables(environ: Mapping[str, str], known: Iterable[str]) -> list[str]:
    """One line per `QUICFLEET_*` variable that names no setting (a typo is otherwise silently ignored)."""
    names = sorted(f"{ENV_PREFIX}{name.upper()}" for name in known)
    lines = []
    for variable in sorted(environ):
        rest = variable.removeprefix(ENV_PREFIX)
        if rest == variable or variable in names or rest in TOOL_VARIABLES or rest.startswith("BENCH_"):
            continue
        lines.append(f"{variable} is not a setting of any service{suggest(variable, names)}")
    return lines
