"""Clustered NATS with the generated users: the same users on every node, and routes that demand their secret.

Both layouts run for real on loopback: `quicfleet up --nats-cluster 3`'s (ops.natsserver writes
each node's config) and compose.cluster.yaml's (compose's `nats-auth` entry point writes
node-<i>.conf beside the image's deploy/docker/nats.conf).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from ops.natsauth import OPERATOR, Auth, prepare
from ops.natsserver import NatsCluster, free_node_ports, nats_server_binary
from shared.bus import connect_options
from shared.contract.subjects import Subjects
from shared.kv import ReplicasUnavailable, open_bucket
from shared.settings import ServiceSettings
from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[2]


def rogue_route(port: int, cluster: str = "quicfleet", secret: str | None = None) -> bytes:
    """What a route listener answers a server that joins without (or with) the routes' secret."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, sock.makefile("rb") as lines:
        lines.readline()  # the server's INFO
        hello = {"verbose": False, "pedantic": False, "tls_required": False, "name": "rogue", "cluster": cluster}
        if secret is not None:
            hello |= {"user": "route", "pass": secret}
        sock.sendall(b"CONNECT " + json.dumps(hello).encode() + b"\r\nPING\r\n")
        return lines.readline()


async def login(url: str, auth_dir: Path, role: str) -> NATS:
    settings = ServiceSettings(nats_url=url, nats_user=role, nats_password_file=auth_dir / role / "password",
                               nats_inbox_prefix=f"_INBOX_{role}")
    return await nats.connect(**(connect_options(settings, "cluster-test") | {"max_reconnect_attempts": 3}))


async def jetstream_answers(url: str, auth_dir: Path) -> bool:
    try:
        nc = await login(url, auth_dir, OPERATOR)
    except (OSError, nats.errors.Error):
        return False
    try:
        await nc.jetstream(timeout=1).account_info()
        return True
    except (nats.errors.Error, TimeoutError):
        return False
    finally:
        await nc.close()


async def bucket_replicas(url: str, auth_dir: Path) -> int | None:
    """The scaler's user makes its bucket on all three nodes, as the scaler does (None while JetStream
    answers but its meta group does not know all three peers yet: the scaler retries then too)."""
    nc = await login(url, auth_dir, "scaler")
    try:
        await open_bucket(nc, "quicfleet_scaler", replicas=3)
        info = await nc.jetstream().stream_info("KV_quicfleet_scaler")
        return info.config.num_replicas or 1
    except ReplicasUnavailable:
        return None
    finally:
        await nc.close()


@pytest.fixture
def up_cluster(tmp_path: Path) -> Iterator[tuple[NatsCluster, Auth]]:
    """Three nodes configured as `up --nats-cluster 3` configures them, users and route secret included."""
    auth = prepare(tmp_path / "nats-auth", Subjects())
    cluster = NatsCluster(tmp_path / "nats", 3, auth=auth.server_block, route_secret=auth.route_secret)
    cluster.start()
    yield cluster, auth
    cluster.stop()


async def test_up_cluster_routes_demand_their_secret_and_every_node_knows_the_users(
    up_cluster: tuple[NatsCluster, Auth],
) -> None:
    """`up`'s nodes form a cluster over authorised routes, refuse a route without the secret, and the scaler's
    user keeps its bucket on all three."""
    cluster, auth = up_cluster
    await wait_until(lambda: jetstream_answers(cluster.url, auth.directory), 30, what="JetStream through the cluster")
    assert await wait_until(lambda: bucket_replicas(cluster.url, auth.directory), 30, interval=0.5, what="3 peers") == 3
    for node in cluster.ports:
        assert b"Authorization Violation" in rogue_route(node.cluster), "a route without the secret is refused"
    assert rogue_route(cluster.ports[0].cluster, secret=auth.route_secret) == b"PONG\r\n"


@pytest.fixture
def compose_cluster(tmp_path: Path) -> Iterator[tuple[str, Path, list[int]]]:
    """compose.cluster.yaml's three nodes from its own files: the image's nats.conf and what `nats-auth` writes.

    Each node gets its own copy of /etc/quicfleet (the image's, plus the one `nats-auth` volume)
    with the store pointed at its own directory, as each container has its own store volume.
    """
    ports = free_node_ports(3)
    routes = ",".join(f"127.0.0.1:{p.cluster}" for p in ports)
    subprocess.run([sys.executable, "-m", "ops.natsauth", "--shared-volumes", "--cluster-routes", routes,
                    str(tmp_path / "volume")], check=True, capture_output=True, timeout=60)
    nodes = [_node(tmp_path, index, port.client) for index, port in enumerate(ports)]
    try:
        yield ",".join(f"nats://127.0.0.1:{p.client}" for p in ports), tmp_path / "volume", [p.cluster for p in ports]
    finally:
        for node in nodes:
            node.terminate()
            node.wait(10)


def _node(tmp_path: Path, index: int, port: int) -> subprocess.Popen[bytes]:
    etc = tmp_path / f"etc{index + 1}"
    shutil.copytree(tmp_path / "volume", etc / "auth")
    image_config = (ROOT / "deploy" / "docker" / "nats.conf").read_text()
    (etc / "nats.conf").write_text(image_config.replace("/var/lib/quicfleet/nats", str(tmp_path / f"store{index}")))
    log = (tmp_path / f"node{index + 1}.log").open("wb")
    argv = [nats_server_binary(), "-c", str(etc / "auth" / f"node-{index + 1}.conf"), "-p", str(port),
            "--server_name", f"quicfleet-{index + 1}"]
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


async def test_compose_cluster_files_run_authorised_routes_and_the_generated_users(
    compose_cluster: tuple[str, Path, list[int]],
) -> None:
    """compose.cluster.yaml's node configs start a cluster whose routes refuse a stranger, whose nodes refuse a
    client without a login, and where the scaler's user keeps its bucket on all three."""
    url, auth_dir, route_ports = compose_cluster
    await wait_until(lambda: jetstream_answers(url, auth_dir), 30, what="JetStream through the compose cluster")
    assert await wait_until(lambda: bucket_replicas(url, auth_dir), 30, interval=0.5, what="3 peers") == 3
    assert all(b"Authorization Violation" in rogue_route(port) for port in route_ports)
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization violation"):
        await nats.connect(url.split(",")[0], allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2)
    assert oct((auth_dir / "scaler" / "password").stat().st_mode & 0o777) == "0o444", "readable in its own volume"
