"""The end-to-end tier: real VMs under QEMU, in a network namespace the tier creates.

Where the lab cannot run (not root, no QEMU or libvirt), or a developer sets
QUICFLEET_SKIP_E2E=1, every test here is skipped with the reason in capitals, except under CI
(`CI=true`), where that is a failure: CI must prove the real path. The lab is started once per
session and torn down by a finalizer, also after a failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ops.lab import Lab, LabInfo, lab_possible
from shared.bus import Bus, connect
from shared.contract.policy import PolicyPatch, ScalingPolicy
from shared.contract.subjects import Subjects
from shared.settings import ServiceSettings
from tests.e2e.fleetwatch import FleetWatch, services_answer
from tests.e2e.load import LoadRun
from tests.e2e.stack import Stack, running_in

TIMINGS: list[str] = []
"""Figures a test measured (one line each), printed at the end of the run."""


def _require_lab() -> None:
    ok, why = lab_possible()
    if ok and os.environ.get("QUICFLEET_SKIP_E2E") == "1":
        ok, why = False, "QUICFLEET_SKIP_E2E=1 (a developer opted out on a shared machine)"
    if ok:
        return
    message = f"END-TO-END TIER NOT RUN: {why}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: a skipped end-to-end tier is a failure)", pytrace=False)
    warnings.warn(message, stacklevel=2)
    pytest.skip(message)


@pytest.fixture(scope="session")
def e2e_workdir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """The tier's own directory, outside pytest's basetemp: other pytest runs on the machine
    prune old basetemps, which must never delete a running lab's disks and sockets. Kept (with
    the services' logs) when a test failed; removed otherwise."""
    _require_lab()
    workdir = Path(tempfile.mkdtemp(prefix="quicfleet-e2e-"))
    yield workdir
    if request.session.testsfailed:
        print(f"\nend-to-end logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def lab_handle(e2e_workdir: Path) -> Iterator[Lab]:
    """The started lab (namespace, private libvirtd, DHCP network, template), for the session."""
    lab = Lab(e2e_workdir / "lab", name=f"qf-e2e-{os.getpid()}")
    lab.start()  # undoes itself on failure
    try:
        yield lab
    finally:
        lab.stop()


@pytest.fixture
def lab(lab_handle: Lab) -> LabInfo:
    """Where the lab's libvirt, network and template are."""
    return lab_handle.info


@pytest.fixture
def lab_workdir(lab_handle: Lab) -> Path:
    return lab_handle.workdir


@pytest.fixture(scope="module")
def stack(lab_handle: Lab, e2e_workdir: Path) -> Iterator[Stack]:
    """NATS and the services in the namespace; this thread stays inside it for the module."""
    with running_in(lab_handle, Stack(lab_handle, e2e_workdir / "stack")) as running:
        yield running


@pytest.fixture
async def watch(stack: Stack) -> AsyncIterator[FleetWatch]:
    assert stack.nats is not None
    bus = Bus(await connect(ServiceSettings(nats_url=stack.nats.url), "quicfleet-e2e"), Subjects())
    await services_answer(bus)
    policy = PolicyPatch(min_replicas=0, max_replicas=3)
    await bus.request(bus.subjects.cmd_policy, policy, ScalingPolicy, timeout=30)
    fleet = FleetWatch(bus)
    await fleet.start()
    yield fleet
    await bus.drain()
    assert not stack.exited(), f"a service exited: {stack.exited()}; logs in {stack.workdir}"


@pytest.fixture
def load(lab_handle: Lab, stack: Stack, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Start steady HTTP/3 load through the balancer on demand; stopped after the test."""
    runs: list[LoadRun] = []

    def start() -> LoadRun:
        where = stack.workdir / f"load-{request.node.name[:40]}-{len(runs)}"
        runs.append(LoadRun(lab_handle.wrap([]), stack.balancer_url, where))
        return runs[-1]

    yield start
    for run in runs:
        if run.process.poll() is None:
            run.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print what the end-to-end tests measured, so CI's log keeps the figures."""
    if TIMINGS:
        terminalreporter.section("end-to-end figures")
        for line in TIMINGS:
            terminalreporter.write_line(line)
