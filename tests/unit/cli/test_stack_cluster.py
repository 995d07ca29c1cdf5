"""`up --nats-cluster` and compose.cluster.yaml: every service told every node, and as many replicas as nodes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ops.cli.health import SERVICES
from ops.natsauth import node_configs
from ops.stack.plan import Mode, Plan, nats_children, service_env, style_of
from shared.settings import ENV_PREFIX, ServiceSettings

ROOT = Path(__file__).resolve().parents[3]
URLS = "nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224"


def test_one_server_keeps_its_old_name_and_a_cluster_numbers_its_nodes() -> None:
    """`nats` alone (its lines, restarts and store as before); `nats-1` ... `nats-3` in a cluster, coloured alike."""
    assert nats_children(1) == ["nats"]
    assert nats_children(3) == ["nats-1", "nats-2", "nats-3"]
    assert style_of("nats-2") == style_of("nats") and style_of("scaler") != style_of("nats")


def test_cluster_services_get_every_url_and_as_many_replicas_as_nodes() -> None:
    """Each service gets all node URLs and QUICFLEET_NATS_REPLICAS=3; a caller's own replica count wins."""
    plan = Plan(Mode.TEST)
    env = service_env({}, "scaler", URLS, plan, tty=False, replicas=3)
    assert env["QUICFLEET_NATS_URL"] == URLS and env["QUICFLEET_NATS_REPLICAS"] == "3"
    mine = service_env({"QUICFLEET_NATS_REPLICAS": "1"}, "scaler", URLS, plan, tty=False, replicas=3)
    assert mine["QUICFLEET_NATS_REPLICAS"] == "1"
    assert "QUICFLEET_NATS_REPLICAS" not in service_env({}, "scaler", "nats://127.0.0.1:4222", plan, tty=False)


@pytest.fixture(scope="module")
def cluster_compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.cluster.yaml").read_text())
    return data


def _flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_three_nodes_with_their_own_names_ports_routes_and_stores(cluster_compose: dict[str, Any]) -> None:
    """nats, nats-2, nats-3: distinct names and ports, each from its own node config (written by `nats-auth`
    from one list of routes: its own listener, authorised routes to the other two), one volume each."""
    nodes = {name: cluster_compose["services"][name] for name in ("nats", "nats-2", "nats-3")}
    commands = {name: spec["command"] for name, spec in nodes.items()}
    assert len({_flag(c, "--server_name") for c in commands.values()}) == 3
    assert len({_flag(c, "-p") for c in commands.values()}) == 3
    assert [c[:3] for c in commands.values()] == [
        ["nats-server", "-c", f"/etc/quicfleet/auth/node-{i}.conf"] for i in (1, 2, 3)]
    routes = _flag(cluster_compose["services"]["nats-auth"]["command"], "--cluster-routes").split(",")
    assert [re.sub(r"\$\{NATS_ROUTE_PORT(_\d)?:-(\d+)\}", r"\2", r) for r in routes] == [
        "127.0.0.1:6222", "127.0.0.1:6223", "127.0.0.1:6224"]
    for index, config in enumerate(node_configs(routes, "s3cret")):
        assert f'listen: "{routes[index]}"' in config and 'include "../nats.conf"' in config
        assert sorted(re.findall(r"nats-route://route:s3cret@([^\"]+)", config)) == sorted(
            r for r in routes if r != routes[index])
    volumes = [spec["volumes"][0].split(":")[0] for name, spec in nodes.items() if name != "nats"]
    assert volumes == ["nats-data-2", "nats-data-3"] and set(volumes) <= set(cluster_compose["volumes"])
    assert all("nats-auth:/etc/quicfleet/auth:ro" in spec["volumes"] for name, spec in nodes.items() if name != "nats")


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_knows_every_node_and_keeps_three_copies(cluster_compose: dict[str, Any], service: str) -> None:
    """Each service's override names all three client URLs, 3 replicas (a shared setting) and waits for every node."""
    spec = cluster_compose["services"][service]
    env = spec["environment"]
    ports = re.findall(r"NATS_PORT(?:_\d)?:-(\d+)", env["QUICFLEET_NATS_URL"])
    assert ports == ["4222", "4223", "4224"] and env["QUICFLEET_NATS_REPLICAS"] == "3"
    assert all(name.removeprefix(ENV_PREFIX).lower() in ServiceSettings.model_fields for name in env)
    assert set(spec["depends_on"]) == {"nats", "nats-2", "nats-3"}


def test_the_compose_nats_config_fsyncs_every_write_on_every_node() -> None:
    """All three nodes run the one nats.conf, whose JetStream syncs every write."""
    config = (ROOT / "deploy" / "docker" / "nats.conf").read_text()
    assert re.search(r"sync_interval:\s*always", config)
