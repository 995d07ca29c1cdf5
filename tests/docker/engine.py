"""A private Docker engine for the compose test: Debian's dockerd started by hand, no registry.

The daemon gets its own socket and exec root under a fresh temporary folder and no bridge,
iptables or masquerading (containers use host networking), so it touches nothing of the host's.
Its data root is kept in a machine-wide cache (/var/cache/quicfleet/docker-test, or
QUICFLEET_DOCKER_CACHE) so that layer and build caches, and the debootstrap base image tarball,
survive between runs and between clones of the repository on one machine (CI clones afresh each
time: a cache inside the clone was rebuilt on every run). A cold cache only makes the tier slower.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("QUICFLEET_DOCKER_CACHE", "/var/cache/quicfleet/docker-test"))
BASE_IMAGE = "quicfleet-base:bookworm"
TOOLS = ("dockerd", "docker-compose", "debootstrap")


def docker_cli() -> str:
    """Debian's docker client when installed (it matches the daemon), else any on PATH."""
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")


def why_not() -> str | None:
    """None when a private engine can be tried here; else the reason it cannot."""
    if os.environ.get("QUICFLEET_SKIP_DOCKER") == "1":
        return "QUICFLEET_SKIP_DOCKER=1 (a developer opted out on a shared machine)"
    if os.geteuid() != 0:
        return "the docker test needs root to start dockerd"
    absent = [tool for tool in TOOLS if shutil.which(tool) is None]
    if absent:
        return f"missing {', '.join(absent)} (deploy/apt/docker.txt lists them; `make deps` installs them)"
    return None


class Engine:
    """dockerd on a private socket; `stop()` ends it by pid and unmounts what it left mounted."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="qfd-"))
        self.data_root = CACHE / "data"
        self.exec_root = self.tmp / "exec"
        self.socket = self.tmp / "docker.sock"
        self.pidfile = self.tmp / "docker.pid"
        self.log = self.tmp / "dockerd.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return os.environ | {"DOCKER_HOST": f"unix://{self.socket}", "DOCKER_BUILDKIT": "0",
                             "COMPOSE_DOCKER_CLI_BUILD": "0"}

    def start(self, timeout: float = 60.0, wrap: Callable[[list[str]], list[str]] | None = None) -> None:
        """Start dockerd (through `wrap`, e.g. inside the lab's network namespace) and wait for it."""
        self.data_root.mkdir(parents=True, exist_ok=True)
        argv = ["dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false",
                f"--data-root={self.data_root}", f"--exec-root={self.exec_root}", f"--pidfile={self.pidfile}",
                f"--host=unix://{self.socket}"]
        argv = wrap(argv) if wrap else argv
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while self.docker("version", check=False).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.3)

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([docker_cli(), *args], env=self.env, capture_output=True, text=True,
                              check=check, timeout=timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for mount in reversed(self.mounts()):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def mounts(self) -> list[str]:
        """Mount points the engine made (under its exec root or data root) that are still mounted."""
        roots = (str(self.exec_root), str(self.data_root))
        with open("/proc/mounts") as table:
            points = [line.split()[1] for line in table]
        return [point for point in points if point.startswith(roots)]

    def leftover_processes(self) -> list[int]:
        """Processes (dockerd, containerd, shims) still running with our exec root on their command line."""
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and str(self.exec_root).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def ensure_base_image(self) -> None:
        """A bare Debian bookworm image (debootstrap minbase, cached as a tarball) under BASE_IMAGE."""
        if self.docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
            return
        tarball = CACHE / "bookworm-minbase.tar"
        if not tarball.exists():
            build_rootfs_tarball(tarball)
        with tarball.open("rb") as data:
            subprocess.run([docker_cli(), "import", "-", BASE_IMAGE], stdin=data, env=self.env, check=True,
                           capture_output=True, timeout=300)


def build_rootfs_tarball(tarball: Path) -> None:
    """`debootstrap --variant=minbase bookworm` into a temporary folder, packed as a tarball."""
    rootfs = Path(tempfile.mkdtemp(prefix="qfd-rootfs-"))
    try:
        subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), "http://deb.debian.org/debian"],
                       check=True, capture_output=True, timeout=900)
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True, timeout=300)
        partial.rename(tarball)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
