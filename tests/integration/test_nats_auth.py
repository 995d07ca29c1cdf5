"""Services log in to a NATS server that demands credentials and enforces permissions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from ops.natsserver import NatsServer
from services.scaler.bootstrap import bootstrap as scaler_bootstrap
from services.scaler.settings import ScalerSettings
from shared.bus import Bus, connect_options
from shared.contract.base import ErrorCode
from shared.contract.commands import GetStatus, ScaleFleet
from shared.contract.status import DesiredState, FleetStatus
from shared.contract.subjects import Subjects
from shared.errors import BusError
from shared.settings import ServiceSettings

AUTH = """
authorization {
  users = [
    {user: scaler, password: scaler-secret}
    {user: viewer, password: viewer-secret, permissions: {
      publish: {allow: ["fleet.cmd.status", "$SRV.>"]}
      subscribe: {allow: ["_INBOX.>"]}
    }}
  ]
}
"""


@pytest.fixture
def secured_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server that requires a user and password, with a read-only `viewer`."""
    server = NatsServer(tmp_path, extra=AUTH)
    server.start()
    yield server
    server.stop()


async def _client(server: NatsServer, user: str, password: str) -> Bus:
    settings = ServiceSettings(nats_url=server.url, nats_user=user, nats_password=password)
    options = connect_options(settings, "test") | {"max_reconnect_attempts": 0, "allow_reconnect": False}
    return Bus(await nats.connect(**options), Subjects())


async def test_service_with_credentials_answers_and_viewer_is_limited(
    secured_nats: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scaler logs in with QUICFLEET_NATS_USER/PASSWORD; a viewer may ask status but not scale."""
    monkeypatch.setenv("QUICFLEET_NATS_URL", secured_nats.url)
    monkeypatch.setenv("QUICFLEET_NATS_USER", "scaler")
    monkeypatch.setenv("QUICFLEET_NATS_PASSWORD", "scaler-secret")
    async with scaler_bootstrap(ScalerSettings()):
        viewer = await _client(secured_nats, "viewer", "viewer-secret")
        try:
            status = await viewer.request(viewer.subjects.cmd_status, GetStatus(), FleetStatus)
            assert status.desired == 0
            with pytest.raises(BusError) as refused:
                await viewer.request(viewer.subjects.cmd_scale, ScaleFleet(replicas=2), DesiredState, timeout=1)
            assert refused.value.code is ErrorCode.UNAVAILABLE
            again = await viewer.request(viewer.subjects.cmd_status, GetStatus(), FleetStatus)
            assert again.desired == status.desired
        finally:
            await viewer.drain()


async def test_wrong_password_is_refused(secured_nats: NatsServer) -> None:
    """A client with a wrong password cannot connect."""
    with pytest.raises(Exception, match=r"(?i)authorization|no servers"):
        await _client(secured_nats, "scaler", "wrong")
