"""The configuration reference generated from the Settings classes."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from pydantic import SecretStr

from ops.cli.health import SERVICES
from ops.configdocs import render, settings_class, type_name, write
from shared.settings import ServiceSettings


def test_every_settings_field_of_every_service_is_documented() -> None:
    """Each service's settings class is found and each of its variables appears in the reference."""
    text = render()
    for service in SERVICES:
        cls = settings_class(service)
        assert issubclass(cls, ServiceSettings)
        for name in cls.model_fields:
            assert f"`QUICFLEET_{name.upper()}`" in text, (service, name)


@pytest.mark.parametrize(("annotation", "shown"), [
    (int, "int"), (str | None, "str, optional"), (Literal["a", "b"], "one of: a, b"),
    (SecretStr | None, "secret, optional"), (Path, "path"),
])
def test_types_read_as_words(annotation: object, shown: str) -> None:
    """Field types are written for people, not as Python reprs."""
    assert type_name(annotation) == shown


def test_write_reports_whether_the_file_changed(tmp_path: Path) -> None:
    """Writing twice changes the file once, so `make docs` is idempotent."""
    target = tmp_path / "configuration.md"
    assert write(target) is True
    assert write(target) is False
    assert target.read_text().startswith("# Configuration reference")
