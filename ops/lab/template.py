"""The Debian test template: built by deploy/template/build.sh, defined into the lab's libvirt."""

from __future__ import annotations

import os
from pathlib import Path

from ops.lab import netns
from ops.paths import DEPLOY

TEMPLATE_NAME = "backend-template"
POOL_NAME = "quicfleet"
BUILD_SCRIPT = DEPLOY / "template" / "build.sh"


def build_dir() -> Path:
    """Artefacts are shared by every lab on the machine (QUICFLEET_TEMPLATE_BUILD_DIR overrides)."""
    override = os.environ.get("QUICFLEET_TEMPLATE_BUILD_DIR")
    return Path(override) if override else BUILD_SCRIPT.parent / "build"


def build() -> None:
    """Build the artefacts unless they are up to date (seconds the first time, instant later)."""
    _script(["--build-only"])


def define(uri: str, workdir: Path, network: str) -> None:
    """Define `backend-template` (domain, and its disk as a volume in pool `quicfleet`)."""
    _script(
        [
            "--define",
            "--uri",
            uri,
            "--name",
            TEMPLATE_NAME,
            "--pool",
            POOL_NAME,
            "--pool-dir",
            str(workdir / "pool"),
            "--boot-dir",
            str(workdir / "boot"),
            "--network",
            network,
        ]
    )


def _script(args: list[str]) -> None:
    if not BUILD_SCRIPT.exists():
        raise netns.LabError(f"{BUILD_SCRIPT} is missing (the template build is part of the repository)")
    netns.run(["bash", str(BUILD_SCRIPT), "--out", str(build_dir()), *args])
