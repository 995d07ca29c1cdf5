"""Settings read from QUICFLEET_* variables."""

from __future__ import annotations

import pytest

from shared.settings import ServiceSettings, SettingsError, load_settings


def test_settings_come_from_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """QUICFLEET_NATS_URL and QUICFLEET_SUBJECT_PREFIX set the fields of the same name."""
    monkeypatch.setenv("QUICFLEET_NATS_URL", "nats://127.0.0.1:5222")
    monkeypatch.setenv("QUICFLEET_SUBJECT_PREFIX", "blue")
    settings = load_settings(ServiceSettings)
    assert settings.nats_url == "nats://127.0.0.1:5222"
    assert settings.subject_prefix == "blue"


def test_bad_variable_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad value exits with a message that names the environment variable."""
    monkeypatch.setenv("QUICFLEET_NATS_URL", "http://example.invalid")
    monkeypatch.setenv("QUICFLEET_LOG_LEVEL", "loud")
    with pytest.raises(SettingsError) as caught:
        load_settings(ServiceSettings)
    assert "QUICFLEET_NATS_URL" in str(caught.value)
    assert "QUICFLEET_LOG_LEVEL" in str(caught.value)
