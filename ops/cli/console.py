"""Where the CLI prints: one console for results, one for errors, and the one-line failure.

Shared by the fleet commands (`app`) and the local ones (`local`), which `app` registers, so
neither needs the other's module for its output.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from shared.redact import mask_credentials

ROOT = Path(__file__).resolve().parents[2]
"""The checkout the CLI runs from (for `template build` and `config-docs`)."""

out = Console(highlight=False, markup=False)
err = Console(stderr=True, highlight=False)


def fail(message: str, code: int) -> typer.Exit:
    """Print `quicfleet: message` on stderr (credentials in URLs masked); the caller raises the returned exit."""
    err.print(f"quicfleet: {mask_credentials(message)}", style="red", markup=False, soft_wrap=True)
    return typer.Exit(code)
