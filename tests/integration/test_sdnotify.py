"""A real service under a stand-in systemd: READY=1 once serving, watchdog pings, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def receive_until(sock: socket.socket, wanted: str, deadline_s: float) -> list[str]:
    """Datagrams received until one holds `wanted` (or the deadline passes)."""
    seen: list[str] = []
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and not any(wanted in message for message in seen):
        sock.settimeout(max(0.1, end - time.monotonic()))
        try:
            seen.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    return seen


def test_metrics_service_notifies_readiness_watchdog_and_stopping(settings_env: dict[str, str], tmp_path: Path) -> None:
    """`python -m services.metrics` sends READY=1 with its pid, then WATCHDOG=1, then STOPPING=1 and exits 0."""
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        env = os.environ | settings_env | {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"}
        proc = subprocess.Popen([sys.executable, "-m", "services.metrics"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            ready = receive_until(sock, "READY=1", 30)
            pings = receive_until(sock, "WATCHDOG=1", 5)
        finally:
            proc.send_signal(signal.SIGTERM)
        stopping = receive_until(sock, "STOPPING=1", 20)
        code = proc.wait(30)
    output = proc.stdout.read().decode() if proc.stdout else ""
    assert any("READY=1" in m and f"MAINPID={proc.pid}" in m for m in ready), (ready, output[-2000:])
    assert any(m == "WATCHDOG=1" for m in pings)
    assert any("STOPPING=1" in m for m in stopping)
    assert code == 0


def test_a_misspelt_variable_is_warned_about_at_start(settings_env: dict[str, str]) -> None:
    """A service started with QUICFLEET_METRICS_PROT logs its name and the close match, and still starts."""
    env = os.environ | settings_env | {"QUICFLEET_METRICS_PROT": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "services.metrics"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end and not any("service.started" in line for line in lines):
            lines.append(proc.stdout.readline().decode())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    warning = next(line for line in lines if "settings.unknown_variable" in line)
    assert "QUICFLEET_METRICS_PROT" in warning and "did you mean QUICFLEET_METRICS_PORT?" in warning
    assert any("service.started" in line for line in lines)
