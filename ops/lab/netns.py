"""Network namespaces for the lab: create, list the processes inside, enter, delete.

The lab keeps every packet of a test run on this machine: guests, libvirt's DHCP, NATS, the
services and the test clients all live in one namespace that the lab creates and deletes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

CLONE_NEWNET = 0x40000000


def run(argv: list[str], check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a short command (fed `stdin` when given); on failure the error names the command and its stderr."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, input=stdin)
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[:400]}")
    return done


class LabError(RuntimeError):
    """A lab step failed; the message says which one and why."""


def exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def create(name: str) -> None:
    """Create the namespace (if missing) with its loopback up."""
    if not exists(name):
        run(["ip", "netns", "add", name])
    run(["ip", "-n", name, "link", "set", "lo", "up"])


def pids(name: str) -> list[int]:
    """Processes whose network namespace is `name` (qemu, dnsmasq, daemons, services)."""
    if not exists(name):
        return []
    done = run(["ip", "netns", "pids", name], check=False)
    return [int(token) for token in done.stdout.split() if token.isdigit()]


def alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in {"Z", "X"}


def terminate(pids_: list[int], grace_s: float = 10.0) -> None:
    """SIGTERM the given processes, then SIGKILL whatever still runs after `grace_s`."""
    _signal_all(pids_, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(alive(pid) for pid in pids_) and time.monotonic() < deadline:
        time.sleep(0.1)
    _signal_all([pid for pid in pids_ if alive(pid)], signal.SIGKILL)


def _signal_all(pids_: list[int], sig: signal.Signals) -> None:
    for pid in pids_:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def delete(name: str) -> None:
    """Kill what still runs inside the namespace, then delete it (fine when already gone)."""
    terminate(pids(name), grace_s=5.0)
    if exists(name):
        run(["ip", "netns", "del", name])


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Move the calling thread into the namespace and back: sockets it opens and processes it
    starts (nats-server, services, test clients) are then inside the lab's network."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/thread-self/ns/net", "rb") as home, open(f"/run/netns/{name}", "rb") as lab:
        _setns(libc, lab.fileno())
        try:
            yield
        finally:
            _setns(libc, home.fileno())


def _setns(libc: ctypes.CDLL, fd: int) -> None:
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise LabError(f"setns failed: {os.strerror(errno)}")


def rss_kib(pids_: list[int]) -> int:
    """Resident memory of these processes together, in KiB (what a lab's daemons cost)."""
    total = 0
    for pid in pids_:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total
