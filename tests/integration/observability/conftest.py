"""Fixtures of the observability checks: the provisioner's libvirt world (test:///default, one template per test)."""

from __future__ import annotations

from tests.integration.provisioner.conftest import world

__all__ = ["world"]
