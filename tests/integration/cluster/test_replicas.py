"""`QUICFLEET_NATS_REPLICAS`: buckets are made with that many copies, raised when older ones have fewer,
and refused at once (exit 2, one clear line) when NATS has fewer servers than that."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from structlog.testing import capture_logs

from ops.natsserver import NatsCluster, NatsServer
from shared.bus import Bus
from shared.kv import ReplicasUnavailable, open_bucket, stream_name
from tests.integration.cluster.fleet import ROOT
from tests.support import wait_until


async def test_every_node_fsyncs_each_write(cluster: NatsCluster) -> None:
    """Each node of the cluster runs JetStream with `sync_interval: always` and knows the same meta leader."""
    jsz = [node.jsz() or {} for node in cluster.nodes]
    assert [entry.get("config", {}).get("sync_always") for entry in jsz] == [True, True, True]
    assert len({entry["meta_cluster"]["leader"] for entry in jsz}) == 1
    assert {entry["meta_cluster"]["cluster_size"] for entry in jsz} == {3}


async def test_a_one_replica_bucket_opened_with_three_is_reported_and_raised(cluster_bus: Bus) -> None:
    """A 1-replica bucket opened with replicas=3 logs one warning (bucket, have, want), gets 3 peers, keeps its data."""
    js = cluster_bus.nc.jetstream()
    old = await open_bucket(cluster_bus.nc, "legacy", replicas=1)
    await old.put("desired", b"2")
    with capture_logs() as logs:
        kv = await open_bucket(cluster_bus.nc, "legacy", replicas=3)
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert warnings == [
        {"event": "kv.too_few_replicas", "bucket": "legacy", "have": 1, "want": 3, "log_level": "warning"}
    ]
    info = await js.stream_info(stream_name("legacy"))
    assert info.config.num_replicas == 3

    async def three_peers() -> bool:
        cluster = (await js.stream_info(stream_name("legacy"))).cluster
        return cluster is not None and cluster.leader is not None and len(cluster.replicas or []) == 2

    await wait_until(three_peers, 20, 0.1, "the bucket on all three nodes")
    assert (await kv.get("desired")).value == b"2"
    with capture_logs() as again:
        await open_bucket(cluster_bus.nc, "legacy", replicas=3)
    assert [entry for entry in again if entry["log_level"] == "warning"] == []


async def test_more_replicas_than_servers_is_refused_at_once(cluster_bus: Bus, bus: Bus) -> None:
    """replicas=5 on three nodes, or 3 on one server, raises ReplicasUnavailable naming the setting at once (no wait
    for servers that will not come: the bound is loose for a loaded machine, far under any retry-until-up wait)."""
    started = time.monotonic()
    with pytest.raises(ReplicasUnavailable) as cluster_refusal:
        await open_bucket(cluster_bus.nc, "five", replicas=5)
    await open_bucket(cluster_bus.nc, "three", replicas=3)
    with pytest.raises(ReplicasUnavailable) as raise_refusal:
        await open_bucket(cluster_bus.nc, "three", replicas=5)
    with pytest.raises(ReplicasUnavailable) as single_refusal:
        await open_bucket(bus.nc, "alone", replicas=3)
    assert time.monotonic() - started < 15
    for refusal in (cluster_refusal, raise_refusal, single_refusal):
        assert "QUICFLEET_NATS_REPLICAS" in str(refusal.value) and refusal.value.code == 2
    assert "non-clustered" in str(single_refusal.value)


def test_a_scaler_asked_for_too_many_replicas_exits_2_with_one_clear_line(nats_server: NatsServer) -> None:
    """The scaler with QUICFLEET_NATS_REPLICAS=3 on a single server exits 2 at start, saying why, no traceback."""
    env = os.environ | {"QUICFLEET_NATS_URL": nats_server.url, "QUICFLEET_NATS_REPLICAS": "3",
                        "QUICFLEET_LOG_FORMAT": "json", "QUICFLEET_METRICS_PORT": "0"}
    proc = subprocess.run([sys.executable, "-m", "services.scaler"], cwd=ROOT, env=env, capture_output=True,
                          timeout=60, check=False)
    output = (proc.stdout + proc.stderr).decode()
    assert proc.returncode == 2, output[-3000:]
    assert "kv.replicas_unavailable" in output and "Traceback" not in output
