"""virtlogd and libvirtd started inside the lab's namespace, with private state directories.

`ip netns exec` gives each command its own mount namespace. The daemons' command bind-mounts
directories under the lab's workdir over libvirt's system paths there (/run/libvirt,
/var/lib/libvirt, /etc/libvirt, ...), so this libvirtd shares no socket, domain, network or
lease file with a host libvirtd or with another lab, and its socket is reachable from outside
at `<workdir>/run/libvirt-sock`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ops.lab import netns

BIND_DIRS = {
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "etc": "/etc/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
}

QEMU_CONF_EXTRA = """
# quicfleet lab: qemu runs as root so it can read boot files and disks under any workdir.
user = "root"
group = "root"
security_driver = "none"
"""


@dataclass(frozen=True)
class DaemonPaths:
    """Where one lab's daemons keep everything (all under the workdir)."""

    root: Path

    def dir(self, key: str) -> Path:
        return self.root / key

    @property
    def socket(self) -> Path:
        return self.root / "run" / "libvirt-sock"

    @property
    def libvirtd_pid(self) -> Path:
        return self.root / "run" / "libvirtd.pid"

    @property
    def virtlogd_pid(self) -> Path:
        return self.root / "run" / "virtlogd.pid"

    @property
    def log(self) -> Path:
        return self.root / "daemons.log"

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.socket}"


def prepare(paths: DaemonPaths) -> None:
    """Make the private directories; /etc/libvirt is a copy of the host's minus its networks."""
    for key in BIND_DIRS:
        if key != "etc":
            paths.dir(key).mkdir(parents=True, exist_ok=True)
    etc = paths.dir("etc")
    if not etc.exists():
        shutil.copytree("/etc/libvirt", etc, symlinks=True)
        shutil.rmtree(etc / "qemu" / "networks", ignore_errors=True)
        with (etc / "qemu.conf").open("a") as conf:
            conf.write(QEMU_CONF_EXTRA)


def start_script(paths: DaemonPaths, virtlogd: bool = True) -> str:
    """The shell run inside the namespace: private mounts, virtlogd (unless it runs already), then libvirtd."""
    mounts = " && ".join(
        f"mkdir -p {target} && mount --bind {paths.dir(key)} {target}" for key, target in BIND_DIRS.items()
    )
    logd = f" && virtlogd -d -p {BIND_DIRS['run']}/virtlogd.pid" if virtlogd else ""
    return f"{mounts}{logd} && exec libvirtd -p {BIND_DIRS['run']}/libvirtd.pid"


Daemon = subprocess.Popen[bytes]


def start(namespace: str, paths: DaemonPaths, timeout_s: float = 60.0, virtlogd: bool = True) -> Daemon:
    """Start the daemons in `namespace` and wait until libvirtd answers on its socket."""
    prepare(paths)
    with paths.log.open("ab") as log:
        process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, "sh", "-c", start_script(paths, virtlogd)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    _wait_answering(process, paths, timeout_s)
    return process


def _wait_answering(process: subprocess.Popen[bytes], paths: DaemonPaths, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise netns.LabError(f"libvirtd exited with {process.returncode}; see {paths.log}")
        done = netns.run(["virsh", "-q", "-c", paths.uri, "uri"], check=False)
        if done.returncode == 0:
            return
        time.sleep(0.2)
    raise netns.LabError(f"libvirtd did not answer on {paths.socket} within {timeout_s:.0f} s; see {paths.log}")


def stop(paths: DaemonPaths, process: subprocess.Popen[bytes] | None) -> None:
    """Stop libvirtd and virtlogd by their pids (fine when they are already gone)."""
    found = (_read_pid(paths.libvirtd_pid, "libvirtd"), _read_pid(paths.virtlogd_pid, "virtlogd"))
    pids = [pid for pid in found if pid is not None]
    if process is not None and process.poll() is None:
        pids.append(process.pid)
    netns.terminate(sorted(set(pids)))
    if process is not None:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def restart_libvirtd(namespace: str, paths: DaemonPaths, process: Daemon | None) -> Daemon:
    """Stop libvirtd alone and start it again, as a host's `systemctl restart libvirtd` would.

    virtlogd and running guests stay; the new libvirtd finds the guests from its state directory.
    """
    stop_libvirtd(paths, process)
    return start(namespace, paths, virtlogd=False)


def stop_libvirtd(paths: DaemonPaths, process: Daemon | None) -> None:
    """Stop libvirtd alone (virtlogd, dnsmasq and the guests keep running), as `systemctl stop libvirtd` would."""
    pid = _read_pid(paths.libvirtd_pid, "libvirtd")
    netns.terminate([p for p in {pid, process.pid if process is not None else None} if p is not None])
    if process is not None:
        process.wait(timeout=10)


def virtlogd_running(paths: DaemonPaths) -> bool:
    """Whether the lab's virtlogd still runs (a libvirtd started again must not start a second one)."""
    return _read_pid(paths.virtlogd_pid, "virtlogd") is not None


def _read_pid(path: Path, command: str) -> int | None:
    """The pid in `path` if that process is still `command` (a stale file never kills a stranger)."""
    try:
        text = path.read_text().strip()
        comm = Path(f"/proc/{text}/comm").read_text().strip() if text.isdigit() else ""
    except OSError:
        return None
    return int(text) if comm == command else None
