"""Fixtures of the chaos rows, borrowed from the tiers that own them (libvirt world, balancer)."""

from __future__ import annotations

from tests.integration.balancer.conftest import start_balancer
from tests.integration.provisioner.conftest import world

__all__ = ["start_balancer", "world"]
