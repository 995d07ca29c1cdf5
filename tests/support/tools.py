"""Host tools a test needs (systemd-analyze, promtool): found on PATH, else a loud skip (a failure under CI)."""

from __future__ import annotations

import os
import shutil
import warnings

import pytest


def require_tool(name: str, package: str) -> str:
    """The tool's path; missing, the test is skipped with a warning, or fails when CI=true."""
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} NOT FOUND: install Debian's `{package}` (deploy/apt/test.txt; `make test` does)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: a skipped check is a failure)", pytrace=False)
    warnings.warn(message, stacklevel=2)
    pytest.skip(message)
