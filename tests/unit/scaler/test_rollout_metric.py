"""The scaler's /metrics shows the template rollout it knows, declared before any rollout."""

from __future__ import annotations

from services.scaler.telemetry import rollout_family
from shared.contract.rollout import RolloutPhase, RolloutState


def test_no_rollout_declares_an_empty_family() -> None:
    """Before any rollout the family exists without samples (the dashboard's series is known, nothing shown)."""
    family = rollout_family(None)
    assert family.name == "quicfleet_scaler_rollout" and family.samples == []


def test_a_rollout_is_one_sample_on_its_phase_and_versions() -> None:
    """A rollout v1 -> v2 rolling back is 1 on phase rolling_back with both versions as labels."""
    state = RolloutState(phase=RolloutPhase.ROLLING_BACK, old_version="v1", new_version="v2")
    [sample] = rollout_family(state).samples
    assert sample.labels == {"phase": "rolling_back", "old_version": "v1", "new_version": "v2"} and sample.value == 1
