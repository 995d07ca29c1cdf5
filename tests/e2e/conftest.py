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
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.lab import Lab, LabInfo, lab_possible


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
