"""Fixtures: a three-node NATS cluster on free loopback ports, and a test client that knows every node."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ops.natsserver import NatsCluster
from shared.bus import Bus, connect
from shared.contract.subjects import Subjects
from shared.settings import ServiceSettings


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three nats-servers routed to each other, JetStream on each (`sync_interval: always`), stopped after."""
    nodes = NatsCluster(tmp_path / "cluster", 3)
    nodes.start()
    yield nodes
    nodes.stop()


@pytest.fixture
async def cluster_bus(cluster: NatsCluster) -> AsyncIterator[Bus]:
    """A test client given every node's URL, reconnecting like the services do."""
    client = Bus(await connect(ServiceSettings(nats_url=cluster.url), "quicfleet-test"), Subjects())
    yield client
    await client.drain()
