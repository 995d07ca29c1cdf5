"""The CLI's side of NATS: its settings, a bounded connect and one-shot requests that end in a clear error.

Services reconnect forever (`shared.bus.connect`); a person at a terminal must instead hear
within seconds that NATS is not there, so the CLI connects once, with a deadline, and turns
every failure into a `CliError` carrying one line to print and an exit code.

Where NATS is and how to log in come from the same places a service reads them (`--nats-url`
first, then `QUICFLEET_*` variables, then the `[common]` section of the settings file), so an
operator on a host with /etc/quicfleet/quicfleet.toml types no variables; with none of them set
the CLI logs in as the operator of this machine's `quicfleet up` (`ops.cli.login`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import nats
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from pydantic import BaseModel, ConfigDict, ValidationError

from ops.cli import login
from shared.bus import Bus, connect_options
from shared.configfile import CONFIG_ENV, config_path
from shared.contract.subjects import Subjects
from shared.errors import BusError
from shared.settings import EXIT_BAD_SETTINGS, ServiceSettings, SettingsError, describe_settings_error, load_settings

R = TypeVar("R", bound=BaseModel)

EXIT_ERROR = 1
"""A command reached the fleet and was refused, or the fleet did not get where asked."""
EXIT_UNREACHABLE = 3
"""NATS or the service that should answer could not be reached."""


class CliError(Exception):
    """A failure to report as one line on stderr, with the process exit code to use."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass
class NatsSettings:
    """The CLI's NATS settings, read and checked when a command first connects.

    Not at start: `config check`, `serve`, `up` and `template build` never use them, and a
    mistake in the file must reach `config check`, which reports it with all the others.
    """

    nats_url: str | None = None
    config: Path | None = None
    _loaded: ServiceSettings | None = field(default=None, init=False, repr=False)

    def get(self) -> ServiceSettings:
        """The settings (read once), or CliError (exit 2) naming each bad value."""
        if self._loaded is None:
            self._loaded = cli_settings(self.nats_url, self.config)
        return self._loaded


def cli_settings(nats_url: str | None, config: Path | None, environ: Mapping[str, str] = os.environ) -> ServiceSettings:
    """`--nats-url` over `QUICFLEET_*` over the file's `[common]`; `up`'s login only where none names one.

    Only `[common]` is read (and its keys checked): the services' sections are theirs, and
    `quicfleet config check` checks those.
    """
    try:
        base = load_settings(ServiceSettings, config, environ)
    except SettingsError as error:
        raise CliError(str(error) + _unreadable_hint(config, environ), EXIT_BAD_SETTINGS) from None
    overrides = {"nats_url": nats_url} if nats_url else {}
    if not has_login(base):
        overrides |= login.discover(nats_url or base.nats_url, environ)
    if not overrides:
        return base
    try:
        return ServiceSettings.model_validate({**dict(base), **overrides})
    except ValidationError as error:
        raise CliError(describe_settings_error(error), EXIT_BAD_SETTINGS) from None


def has_login(settings: ServiceSettings) -> bool:
    """Whether the variables or the file name a NATS login (then `up`'s is not looked for)."""
    return any(value is not None for value in (settings.nats_user, settings.nats_password,
                                               settings.nats_password_file, settings.nats_token, settings.nats_creds))


def _unreadable_hint(config: Path | None, environ: Mapping[str, str]) -> str:
    """What to do when the file exists but this user may not read it (/etc/quicfleet is 0750 root:quicfleet)."""
    path = config_path(config, environ)
    if path is None or os.access(path, os.R_OK):
        return ""
    try:
        path.stat()
    except FileNotFoundError:
        return ""
    except OSError:
        pass  # behind a directory this user may not enter: the file may well be there
    return (f"\n  (run as root or a member of group quicfleet, or give --config / {CONFIG_ENV} another file; "
            f"{CONFIG_ENV}= with nothing reads none)")


class AnyResult(BaseModel):
    """A reply result whose shape the CLI only displays (e.g. a drain acknowledgement)."""

    model_config = ConfigDict(extra="allow")


def bounded_options(settings: ServiceSettings, timeout: float) -> dict[str, Any]:
    """The services' connect options, but one attempt per server, bounded by `timeout`.

    nats-py hangs on a refused first connect when reconnects are off (`allow_reconnect=False`
    or zero attempts); one attempt with no wait fails at once instead.
    """
    options = connect_options(settings, "quicfleet-cli")
    options.update(
        max_reconnect_attempts=1,
        reconnect_time_wait=0,
        connect_timeout=max(1, round(timeout)),
        error_cb=_quiet,
        disconnected_cb=_quiet_event,
        closed_cb=_quiet_event,
    )
    return options


async def _quiet(_error: Exception) -> None:
    """nats-py logs connection errors itself by default; the CLI reports them once, its own way."""


async def _quiet_event() -> None:
    """No log line for disconnects: the CLI reports what the user asked about, not the transport."""


async def open_client(settings: ServiceSettings, timeout: float = 3.0) -> NATS:
    """Connect once within `timeout` seconds or raise CliError naming the URL."""
    try:
        async with asyncio.timeout(timeout + 1):
            return await nats.connect(**bounded_options(settings, timeout))
    except (OSError, NatsError, TimeoutError) as error:
        detail = "no server answered" if isinstance(error, nats.errors.NoServersError) else str(error)
        detail = detail or type(error).__name__
        raise CliError(f"cannot reach NATS at {settings.nats_url}: {detail}", EXIT_UNREACHABLE) from None


@asynccontextmanager
async def session(settings: ServiceSettings, timeout: float = 3.0) -> AsyncIterator[Bus]:
    """A connected `Bus` for one CLI command, closed (not drained) when the command ends."""
    nc = await open_client(settings, timeout)
    try:
        yield Bus(nc, Subjects(settings.subject_prefix))
    finally:
        await nc.close()


async def ask(bus: Bus, subject: str, command: BaseModel, result: type[R], timeout: float) -> R:
    """Send a command; an error reply or a missing service becomes a CliError with its message."""
    try:
        return await bus.request(subject, command, result, timeout=timeout)
    except BusError as error:
        code = EXIT_UNREACHABLE if error.code.value == "unavailable" else EXIT_ERROR
        raise CliError(f"{error.code.value}: {error.message}", code) from None
    except NatsError as error:
        raise lost(error) from None


def lost(error: Exception) -> CliError:
    """The connection to NATS went away in the middle of a command."""
    return CliError(f"lost the connection to NATS: {error or type(error).__name__}", EXIT_UNREACHABLE)
