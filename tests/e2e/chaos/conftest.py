"""The lab's chaos scenarios share one `ChaosStack` per module (two scalers, NATS with
monitoring, processes killable by name); `watch` and `load` from the e2e tier then use it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.lab import Lab, netns
from tests.e2e.chaos.stack import ChaosStack


@pytest.fixture(scope="module")
def stack(lab_handle: Lab, e2e_workdir: Path, request: pytest.FixtureRequest) -> Iterator[ChaosStack]:
    """NATS and five service processes in the namespace; this thread stays inside it for the module."""
    running = ChaosStack(lab_handle, e2e_workdir / f"chaos-{request.module.__name__.rsplit('.', 1)[-1]}")
    with netns.entered(lab_handle.name):
        try:
            running.start()
            yield running
        finally:
            running.stop()
