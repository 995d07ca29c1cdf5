"""Readiness with identity against real HTTP/3 servers on loopback: the answer must carry the expected UUID."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.provisioner.readiness import IMPOSTOR, ReadinessProbe
from tests.integration.balancer.identity_backends import IdentityH3Backend

ME = "0f8e3c1a-2b4d-4e6f-8a9b-0c1d2e3f4a5b"
OTHER = "11111111-2222-4333-8444-555555555555"


async def test_an_answer_with_the_expected_uuid_is_ready(tmp_path: Path) -> None:
    """The VM that sends its own UUID passes readiness; so does any answer when no UUID is expected."""
    async with IdentityH3Backend(tmp_path, ME) as backend:
        assert await ReadinessProbe(timeout_s=3)(backend.address, ME) is None
        assert await ReadinessProbe(timeout_s=3)(backend.address, None) is None


@pytest.mark.parametrize("sent", [OTHER, None], ids=["another-uuid", "no-header"])
async def test_an_answer_as_another_vm_is_not_ready_and_says_why(tmp_path: Path, sent: str | None) -> None:
    """Another VM's UUID, or none, at the address is a failure with the identity reason naming both sides."""
    async with IdentityH3Backend(tmp_path, sent) as backend:
        reason = await ReadinessProbe(timeout_s=3)(backend.address, ME)
    assert reason is not None and IMPOSTOR in reason
    assert f"expected {ME}" in reason
    assert (OTHER in reason) if sent else ("no x-quicfleet-vm header" in reason)
