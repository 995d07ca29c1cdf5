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

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def test_no_top_level_name_so_compose_v1_accepts_it(compose: dict[str, Any]) -> None:
    """Compose v1 refuses a top-level `name:`; the file has the nats service plus the four."""
    assert "name" not in compose
    assert set(compose["services"]) == {"nats", *SERVICES}


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
    """A service runs `python -m services.<name>` and its healthcheck pings that same name."""
    spec = compose["services"][service]
    assert spec["command"] == ["python", "-m", f"services.{service}"]
    test = spec["healthcheck"]["test"]
    assert test[:2] == ["CMD", "quicfleet"] and test[test.index("health") + 1] == service
    assert spec["depends_on"]["nats"]["condition"] == "service_healthy"
    assert spec["network_mode"] == "host" and spec["restart"]


def test_nats_runs_jetstream_with_sync_always() -> None:
    """The compose NATS config enables JetStream and fsyncs every write."""
    config = (ROOT / "deploy" / "docker" / "nats.conf").read_text()
    assert re.search(r"jetstream\s*\{", config) and re.search(r"sync_interval:\s*always", config)
