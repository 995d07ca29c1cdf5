"""The `quicfleet` command line (entry point `ops.cli:main`)."""

from __future__ import annotations


def main() -> None:
    """Run the CLI; imported lazily so `import ops.cli` stays cheap and side-effect free."""
    import sys

    from ops.cli.app import app
    from ops.cli.entry import run

    sys.exit(run(app))


__all__ = ["main"]
