"""Regenerate docs/configuration.md from the Settings classes (`make docs`).

Same as `quicfleet config-docs`; `--check` exits 1 when the file is out of date.
"""

from __future__ import annotations

import sys

from ops.cli.app import app

if __name__ == "__main__":
    sys.exit(app(["config-docs", *sys.argv[1:]], standalone_mode=True))
