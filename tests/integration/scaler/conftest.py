"""Fixtures for scaler tests that run the real provisioner on libvirt's test driver.

They come from the provisioner's own integration fixtures (one template per test in
`test:///default`); if those are not importable the tests that need them are skipped.
"""

from __future__ import annotations

try:
    from tests.integration.provisioner.conftest import world
except ImportError:  # pragma: no cover - the provisioner's fixtures moved or are not there yet
    world = None  # type: ignore[assignment]

__all__ = ["world"]
