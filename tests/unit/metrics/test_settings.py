"""The metrics service's settings read from QUICFLEET_* variables."""

from __future__ import annotations

import pytest

from services.metrics.settings import MetricsSettings
from shared.settings import SettingsError, load_settings


def test_defaults_are_local_and_sane(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without variables the HTTP server binds 127.0.0.1:9090 and snapshots each second over 10 s."""
    for name in ("HOST", "PORT", "INTERVAL_S", "WINDOW_S", "HISTORY_S"):
        monkeypatch.delenv(f"QUICFLEET_METRICS_{name}", raising=False)
    settings = MetricsSettings()
    assert (settings.metrics_host, settings.metrics_port) == ("127.0.0.1", 9090)
    assert (settings.metrics_interval_s, settings.metrics_window_s) == (1.0, 10.0)


def test_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """QUICFLEET_METRICS_* variables set the port, interval, window and history."""
    monkeypatch.setenv("QUICFLEET_METRICS_PORT", "0")
    monkeypatch.setenv("QUICFLEET_METRICS_INTERVAL_S", "0.5")
    monkeypatch.setenv("QUICFLEET_METRICS_WINDOW_S", "30")
    monkeypatch.setenv("QUICFLEET_METRICS_HISTORY_S", "60")
    settings = MetricsSettings()
    assert (settings.metrics_port, settings.metrics_interval_s, settings.metrics_window_s) == (0, 0.5, 30)
    assert settings.metrics_history_s == 60


@pytest.mark.parametrize(
    ("name", "value"),
    [("METRICS_PORT", "70000"), ("METRICS_INTERVAL_S", "0"), ("METRICS_WINDOW_S", "nan"), ("METRICS_HISTORY_S", "-1")],
)
def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    """An absurd value stops start-up with a message naming the variable."""
    monkeypatch.setenv(f"QUICFLEET_{name}", value)
    with pytest.raises(SettingsError) as caught:
        load_settings(MetricsSettings)
    assert f"QUICFLEET_{name}" in str(caught.value)


def test_window_shorter_than_interval_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A window shorter than the snapshot interval is refused."""
    monkeypatch.setenv("QUICFLEET_METRICS_INTERVAL_S", "5")
    monkeypatch.setenv("QUICFLEET_METRICS_WINDOW_S", "2")
    with pytest.raises(SettingsError):
        load_settings(MetricsSettings)
