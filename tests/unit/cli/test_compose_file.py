"""compose.yaml agrees with the code: commands, healthchecks and every QUICFLEET_* name."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ops.cli.health import SERVICES
from ops.configdocs import settings_class
from shared.settings import ENV_PREFIX, ServiceSettings

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def test_no_top_level_name_so_compose_v1_accepts_it(compose: dict[str, Any]) -> None:
    """Compose v1 refuses a top-level `name:`; the file has nats, its one-shot `nats-auth`, and the four."""
    assert "name" not in compose
    assert set(compose["services"]) == {"nats-auth", "nats", *SERVICES}


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_logs_in_as_itself_from_its_own_volume_only(compose: dict[str, Any], service: str) -> None:
    """A service's NATS user is its own name, its password file lies in its own volume, and it mounts no other
    service's volume (so it cannot read another's password)."""
    spec = compose["services"][service]
    env = spec["environment"]
    assert env["QUICFLEET_NATS_USER"] == service and env["QUICFLEET_NATS_INBOX_PREFIX"] == f"_INBOX_{service}"
    auth_mounts = [v for v in spec["volumes"] if v.startswith("nats-auth")]
    assert auth_mounts == [f"nats-auth-{service}:/run/quicfleet/nats-auth/{service}:ro"]
    assert env["QUICFLEET_NATS_PASSWORD_FILE"] == f"/run/quicfleet/nats-auth/{service}/password"
    init = compose["services"]["nats-auth"]
    assert f"nats-auth-{service}:/run/quicfleet/nats-auth/{service}" in init["volumes"]


def test_nats_waits_for_its_users_and_the_init_runs_once(compose: dict[str, Any]) -> None:
    """nats starts only after `nats-auth` wrote the users, reads them read-only, and `nats-auth` is not restarted."""
    nats, init = compose["services"]["nats"], compose["services"]["nats-auth"]
    assert nats["depends_on"]["nats-auth"]["condition"] == "service_completed_successfully"
    assert "nats-auth:/etc/quicfleet/auth:ro" in nats["volumes"]
    assert init["restart"] == "no" and init["command"][:3] == ["python", "-m", "ops.natsauth"]
    config = (ROOT / "deploy" / "docker" / "nats.conf").read_text()
    assert 'include "auth/authorization.conf"' in config


@pytest.mark.parametrize("service", SERVICES)
def test_every_variable_is_a_settings_field(compose: dict[str, Any], service: str) -> None:
    """Each QUICFLEET_* variable given to a service names a field of that service's Settings class."""
    fields = set(settings_class(service).model_fields)
    names = [name for name in compose["services"][service]["environment"] if name.startswith(ENV_PREFIX)]
    assert names
    unknown = [name for name in names if name.removeprefix(ENV_PREFIX).lower() not in fields]
    assert unknown == []


def test_nats_variables_are_shared_fields(compose: dict[str, Any]) -> None:
    """The nats container's variables (read by its `quicfleet health nats` check) are shared settings."""
    names = compose["services"]["nats"]["environment"]
    assert all(name.removeprefix(ENV_PREFIX).lower() in ServiceSettings.model_fields for name in names)


@pytest.mark.parametrize("service", SERVICES)
def test_command_and_healthcheck_name_the_service(compose: dict[str, Any], service: str) -> None:
    """A service runs `python -m services.<name>` (the balancer through a shell that picks CERT_DIR's pair first)
    and its healthcheck pings that same name."""
    spec = compose["services"][service]
    command = spec["command"]
    if command[:2] == ["sh", "-c"]:
        assert command[2].rstrip().endswith(f"exec python -m services.{service}"), command
    else:
        assert command == ["python", "-m", f"services.{service}"]
    test = spec["healthcheck"]["test"]
    assert test[:2] == ["CMD", "quicfleet"] and test[test.index("health") + 1] == service
    assert spec["depends_on"]["nats"]["condition"] == "service_healthy"
    assert spec["network_mode"] == "host" and spec["restart"]


def test_nats_runs_jetstream_with_sync_always() -> None:
    """The compose NATS config enables JetStream and fsyncs every write."""
    config = (ROOT / "deploy" / "docker" / "nats.conf").read_text()
    assert re.search(r"jetstream\s*\{", config) and re.search(r"sync_interval:\s*always", config)
