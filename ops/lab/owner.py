"""Who started a lab: one record per namespace, so a lab whose owner died can be told from one in use.

A lab outlives its owner when the owner is killed (a SIGKILL, a crashed test run): its namespace,
daemons and guests stay. The record, `<records>/<namespace>.json` (`/run/quicfleet-lab` unless
QUICFLEET_LAB_RECORDS says otherwise), names the owner's pid, that process's start time (a
recycled pid is another process, not the owner) and the lab's workdir, which `Lab.stop()` needs.
A namespace without a record is not ours to judge: the lab leaves it alone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_RECORDS = Path("/run/quicfleet-lab")


def records_dir() -> Path:
    """Where the records live (under /run: a reboot, which ends every lab, also forgets them)."""
    override = os.environ.get("QUICFLEET_LAB_RECORDS")
    return Path(override) if override else DEFAULT_RECORDS


def process_start(pid: int) -> int | None:
    """The start time of `pid` in clock ticks since boot (field 22 of its stat), None when it is gone.

    A zombie counts as gone: it has exited and only waits for its parent to reap it.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if not fields or fields[0] in {"Z", "X"}:
        return None
    return int(fields[19])


@dataclass(frozen=True)
class Owner:
    """The process that started a lab, and where that lab keeps its files."""

    namespace: str
    workdir: Path
    pid: int
    started: int

    def alive(self) -> bool:
        """Whether the very process that started the lab still runs."""
        return process_start(self.pid) == self.started

    def describe(self) -> str:
        state = "running" if self.alive() else "gone"
        return f"started by pid {self.pid} ({state}), workdir {self.workdir}"


def _path(namespace: str) -> Path:
    return records_dir() / f"{namespace}.json"


def claim(namespace: str, workdir: Path) -> Owner:
    """Record this process as the owner of the lab in `namespace` (before anything of it exists)."""
    pid = os.getpid()
    started = process_start(pid)
    assert started is not None, "this process has no /proc entry"
    owner = Owner(namespace, Path(workdir), pid, started)
    records_dir().mkdir(parents=True, exist_ok=True)
    record = {"namespace": namespace, "workdir": str(workdir), "pid": pid, "started": started}
    tmp = _path(namespace).with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(_path(namespace))
    return owner


def read(namespace: str) -> Owner | None:
    """The recorded owner of `namespace`'s lab, None when there is no (readable) record."""
    try:
        record = json.loads(_path(namespace).read_text())
        return Owner(str(record["namespace"]), Path(record["workdir"]), int(record["pid"]), int(record["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def release(namespace: str) -> None:
    """Forget the record (fine when there is none)."""
    _path(namespace).unlink(missing_ok=True)


def recorded() -> list[Owner]:
    """Every readable record, sorted by namespace."""
    if not records_dir().is_dir():
        return []
    found = (read(path.stem) for path in sorted(records_dir().glob("*.json")))
    return [owner for owner in found if owner is not None]
