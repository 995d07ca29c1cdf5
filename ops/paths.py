"""Where the `deploy/` data lives: the checkout's, or the copy a wheel installs under `<prefix>/share`."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The checkout (or, installed from a wheel, site-packages)."""


def deploy_dir() -> Path:
    """`deploy/` beside the code in a checkout, else `<prefix>/share/quicfleet/deploy` (pyproject's data-files)."""
    here = ROOT / "deploy"
    return here if here.is_dir() else Path(sys.prefix) / "share" / "quicfleet" / "deploy"


DEPLOY = deploy_dir()
