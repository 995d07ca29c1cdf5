"""The supervisor's own lines, behind an `up` prefix in the same column as the children's names."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from ops.stack.plan import SERVICE_STYLES


def say(console: Console, message: str, style: str = "bold") -> None:
    console.print(Text(f"{'up':>11} | ", style=SERVICE_STYLES["up"]) + Text(message, style=style), soft_wrap=True)
