"""The scaler's forecast on the metrics service's /metrics: declared from the start, filled once it arrives."""

from __future__ import annotations

from services.metrics.exposition import forecast_families


def test_before_any_forecast_the_load_family_is_empty_and_working_is_zero() -> None:
    """With no forecast yet, the dashboard's series exist: the load family has no samples and `working` is 0."""
    families = {family.name: family for family in forecast_families(None)}
    assert set(families) == {"quicfleet_forecast_load", "quicfleet_forecast_working"}
    assert families["quicfleet_forecast_load"].samples == []
    assert [sample.value for sample in families["quicfleet_forecast_working"].samples] == [0.0]
