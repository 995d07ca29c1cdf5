"""Reliability matrix F10 on the lab: `quicfleet up` SIGKILLed during its start-up (lab half built,
its daemons left running), then started again the way a user would: the second start reclaims the
dead owner's lab instead of refusing, comes up, and its own Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ops.lab import netns, owner
from ops.natsserver import free_port
from tests.e2e.stack import REPO
from tests.support.chaos import Row, record

pytestmark = pytest.mark.chaos

UP_READY = "quicfleet is up"


def _up(workdir: Path, lab: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUICFLEET_")}
    argv = [sys.executable, "-m", "ops.cli", "up", "--workdir", str(workdir), "--nats-port", str(port),
            "--lab-name", lab]
    with log.open("ab") as out:
        return subprocess.Popen(argv, cwd=REPO, env=env | {"NO_COLOR": "1"}, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _wait(condition: Callable[[], object], timeout: float, what: str, log: Path) -> None:
    """Poll `condition` until truthy; fail with the log's tail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}: {log.read_text()[-1500:]}"
        time.sleep(0.2)


KILL_POINTS = {
    "lab daemons started": lambda lab, log: bool(netns.pids(lab)),
    "services started": lambda lab, log: "provisioner | " in log.read_text(errors="replace"),
}
"""When the first start is SIGKILLed: its lab half built, or NATS and the services already running."""


def _killed_then_started(workdir: Path, lab: str, point: str) -> tuple[list[int], float, int, dict[str, object]]:
    """SIGKILL a start at `point`, start again, Ctrl-C it once up; returns the dead owner's processes, the
    seconds the second start took, its exit code and what was left afterwards."""
    port, log = free_port(), workdir / f"up-{point.replace(' ', '-')}.log"
    first = _up(workdir, lab, port, log)
    _wait(lambda: KILL_POINTS[point](lab, log), 300, f"the first start's {point}", log)
    stale = netns.pids(lab)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    started = time.monotonic()
    second = _up(workdir, lab, port, log)
    try:
        _wait(lambda: UP_READY in log.read_text(errors="replace") or second.poll() is not None, 600,
              "the second start to come up", log)
        assert second.poll() is None, f"the second start exited {second.returncode}: {log.read_text()[-1500:]}"
        took = time.monotonic() - started
        survivors = [pid for pid in stale if netns.alive(pid)]
        second.send_signal(signal.SIGINT)
        code = second.wait(timeout=180)
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
    left = {"namespace": netns.exists(lab), "owner record": owner.read(lab) is not None,
            "stale processes": [pid for pid in stale if netns.alive(pid)], "survived the reclaim": survivors}
    return stale, took, code, {what: found for what, found in left.items() if found}


def test_f10_up_killed_during_start_up_is_reclaimed_by_the_next_start(e2e_workdir: Path) -> None:
    """The next `quicfleet up` after one SIGKILLed mid start-up (lab half built, or services running)
    ends the dead owner's processes, comes up, and stops cleanly, leaving no namespace, no owner
    record and no process of either run."""
    workdir = e2e_workdir / "f10"
    workdir.mkdir(parents=True, exist_ok=True)
    results = {point: _killed_then_started(workdir, f"qf-f10-{os.getpid()}", point) for point in KILL_POINTS}
    clean = all(not left and code == 0 for _, _, code, left in results.values())
    figures = "; ".join(f"killed once {point}: {len(stale)} stale processes ended, up again {took:.0f} s later, "
                        f"exit {code}" for point, (stale, took, code, _) in results.items())
    record(Row("F10", "`quicfleet up` SIGKILLed during start-up, started again", faults=len(results),
               invariants={"I1": "pass" if clean else "fail", "I4": "pass" if clean else "fail"}, figures=figures))
    assert clean, {point: (code, left) for point, (_, _, code, left) in results.items()}
