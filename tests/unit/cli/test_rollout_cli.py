"""`quicfleet rollout` output: the one-line summary and the status lines."""

from __future__ import annotations

from ops.cli.rollout import lines, summary
from shared.contract.rollout import (
    RolloutPhase,
    RolloutSettings,
    RolloutState,
    RolloutStatus,
    VersionCount,
    VersionHealth,
)


def test_summary_names_versions_phase_batch_and_reason() -> None:
    """The summary line says from which version to which, the phase, the batch and why."""
    state = RolloutState(phase=RolloutPhase.ROLLING_BACK, old_version=None, new_version="v2", batch=["qf-1"],
                         reason="rolling back: qf-0 of v2 failed (readiness or identity)")
    assert summary(state) == ("rollout the template domain -> v2: rolling_back, replacing qf-1 "
                              "(rolling back: qf-0 of v2 failed (readiness or identity))")
    assert summary(None) == "no rollout was started"


def test_status_lines_show_settings_health_and_versions() -> None:
    """The status shows the settings, each version's figures once it served, and the VMs per version."""
    state = RolloutState(phase=RolloutPhase.PAUSED, old_version="v1", new_version="v2",
                         settings=RolloutSettings(checkpoints=[50], max_surge=2),
                         health=[VersionHealth(version="v1", requests=200, errors=2, latency_s=2.0),
                                 VersionHealth(version="v2")])
    text = "\n".join(lines(RolloutStatus(rollout=state, versions=[VersionCount(version="v2", ready=2)])))
    assert "max surge 2, min healthy 100%, canary 1, bake 60 s, checkpoints 50%" in text
    assert "v1: 200 requests, 1.00% errors, p95 10 ms" in text and "v2: 0 requests" not in text
    assert "v2  ready 2  starting 0" in text
