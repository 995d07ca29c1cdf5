"""The local NATS cluster's layout, decided before any process starts: ports, names, configs, the meta leader."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ops.natsserver import NodePorts, cluster_extra, fixed_node_ports, meta_leader_of, node_name, write_node_config


def test_fixed_ports_follow_the_nats_convention() -> None:
    """`up --nats-cluster 3` from 4222: clients 4222-4224, routes 6222-6224, monitoring 8222-8224."""
    assert fixed_node_ports(4222, 3) == [NodePorts(4222, 6222, 8222), NodePorts(4223, 6223, 8223),
                                         NodePorts(4224, 6224, 8224)]


def test_fixed_ports_past_65535_are_refused() -> None:
    """A first port too high for the monitoring offset fails with the port it would need."""
    with pytest.raises(ValueError, match="65537"):
        fixed_node_ports(61535, 3)


def test_each_node_routes_to_the_others_and_not_itself() -> None:
    """Node 2's config listens for routes on its own port and solicits the other two."""
    ports = fixed_node_ports(4222, 3)
    extra = cluster_extra(1, ports)
    assert 'listen: "127.0.0.1:6223"' in extra
    assert re.findall(r"nats-route://127\.0\.0\.1:(\d+)", extra) == ["6222", "6224"]
    assert 'http: "127.0.0.1:8223"' in extra


def test_a_node_config_has_its_own_name_store_and_fsync(tmp_path: Path) -> None:
    """Each node gets a unique server_name, its own JetStream store and `sync_interval: always`."""
    ports = fixed_node_ports(4222, 3)
    configs = [write_node_config(tmp_path / f"node{i + 1}", i, ports).read_text() for i in range(3)]
    assert [_field(r"server_name: (\S+)", c) for c in configs] == [node_name(i) for i in range(3)]
    assert len({_field(r'store_dir: "(.+)"', c) for c in configs}) == 3
    assert all("sync_interval: always" in c and "name: quicfleet\n" in c for c in configs)


def _field(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    assert found is not None, pattern
    return found.group(1)


def test_meta_leader_is_read_from_jsz() -> None:
    """`/jsz` names the meta leader under meta_cluster; a node that knows none (or no JetStream) gives None."""
    assert meta_leader_of({"meta_cluster": {"leader": "quicfleet-2", "cluster_size": 3}}) == "quicfleet-2"
    assert meta_leader_of({"meta_cluster": {"cluster_size": 3}}) is None
    assert meta_leader_of({}) is None and meta_leader_of(None) is None
