"""What every fleet command of `ops.cli.app` shares: the global options, running a command's
coroutine with errors as exit codes, and printing its result as JSON or a rich view.

Separate from `ops.cli.app` so the app holds only its typer commands, and so a command module that
the app registers could use these without importing the app (which would be a circle).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from ops.cli import render
from ops.cli.client import CliError, NatsSettings
from ops.cli.console import fail, out
from shared.errors import describe_validation_error
from shared.settings import ServiceSettings

T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    """Global options; the NATS settings (command line, QUICFLEET_* variables, config file) read on first use."""

    json: bool
    timeout: float
    nats: NatsSettings

    @property
    def settings(self) -> ServiceSettings:
        return self.nats.get()


def execute(coro: Coroutine[Any, Any, T]) -> T:
    """Run one command's coroutine; CliError becomes its one line and exit code."""
    try:
        return asyncio.run(coro)
    except CliError as error:
        raise fail(error.message, error.code) from None
    except ValidationError as error:
        raise fail(f"invalid argument: {describe_validation_error(error)}", 2) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def emit(options: Options, data: BaseModel | dict[str, Any], view: Any = None) -> None:
    """Print a result: JSON for scripts, else the rich view (or the JSON pretty-printed)."""
    if options.json:
        sys.stdout.write(json.dumps(render.as_json(data)) + "\n")
    elif view is not None:
        out.print(view)
    else:
        out.print_json(json.dumps(render.as_json(data)))
