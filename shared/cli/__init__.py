"""The `quicfleet` command line (entry point `shared.cli:main`)."""

from __future__ import annotations


def main() -> None:
    """Run the CLI; imported lazily so `import shared.cli` stays cheap and side-effect free."""
    from shared.cli.app import app

    app()


__all__ = ["main"]
