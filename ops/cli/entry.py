"""Running the typer app so that a usage error is one line, like every other failure.

typer prints click's usage errors as a boxed panel with the usage above it; the CLI promises
one line on stderr (`quicfleet: <message>`) and exit 2, which scripts and `journalctl` read
better. The app runs in click's non-standalone mode so that the error comes back here.
"""

from __future__ import annotations

from typing import Any

import typer

from ops.cli.console import fail


def run(app: typer.Typer, args: list[str] | None = None) -> int:
    """Run the app; return the exit status (a usage error: its one line and 2)."""
    try:
        result: Any = app(args=args, prog_name="quicfleet", standalone_mode=False)
    except typer.Abort:
        return 1
    except typer.TyperException as error:  # click's ClickException and UsageError derive from it
        return usage_error(error)
    return result if isinstance(result, int) else 0


def usage_error(error: typer.TyperException) -> int:
    """One line for a usage error; `quicfleet` with no command has printed its help already."""
    code: int = getattr(error, "exit_code", 2)
    if type(error).__name__ == "NoArgsIsHelpError":
        typer.echo(getattr(error, "format_message", lambda: "")(), err=True)
        return code
    message = getattr(error, "format_message", lambda: str(error))()
    context = getattr(error, "ctx", None)
    hint = f" (see `{context.command_path} --help`)" if context is not None else ""
    fail(f"{message}{hint}", code)
    return code
