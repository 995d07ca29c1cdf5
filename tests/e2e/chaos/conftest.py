"""The lab's chaos scenarios share one `ChaosStack` per module (two scalers, NATS with
monitoring, processes killable by name); `watch` and `load` from the e2e tier then use it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.lab import Lab
from tests.e2e.chaos.stack import ChaosStack
from tests.e2e.stack import running_in


@pytest.fixture(scope="module")
def stack(lab_handle: Lab, e2e_workdir: Path, request: pytest.FixtureRequest) -> Iterator[ChaosStack]:
    """NATS and five service processes in the namespace; this thread stays inside it for the module."""
    workdir = e2e_workdir / f"chaos-{request.module.__name__.rsplit('.', 1)[-1]}"
    with running_in(lab_handle, ChaosStack(lab_handle, workdir)) as running:
        yield running
