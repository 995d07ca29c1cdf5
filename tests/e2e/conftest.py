"""The end-to-end tier: real VMs under QEMU, in a network namespace the tier creates.

Where the lab cannot run (not root, no QEMU or libvirt) every test here is skipped with the
reason in capitals, except under CI (`CI=true`), where that is a failure: CI must prove the
real path. The lab is started once per session and torn down by a finalizer, also after a
failure; each test cleans up its own VMs.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.lab import Lab, LabInfo, lab_possible


def _require_lab() -> None:
    ok, why = lab_possible()
    if ok:
        return
    message = f"END-TO-END TIER NOT RUN: the VM lab is not possible here: {why}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: a skipped end-to-end tier is a failure)", pytrace=False)
    warnings.warn(message, stacklevel=2)
    pytest.skip(message)


@pytest.fixture(scope="session")
def lab_handle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The started lab (namespace, private libvirtd, DHCP network, template), for the session."""
    _require_lab()
    lab = Lab(tmp_path_factory.mktemp("lab"), name=f"qf-e2e-{os.getpid()}")
    try:
        lab.start()
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
