"""`python -m services.metrics` as a process: HTTP up from QUICFLEET_* variables, clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[3]


async def listening_port(stdout: asyncio.StreamReader) -> int:
    """Read JSON log lines until the HTTP server says which port it bound."""
    while line := await stdout.readline():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "http.listening":
            return int(entry["port"])
    raise AssertionError("the process ended before its HTTP server listened")


async def test_process_serves_http_and_exits_zero_on_sigterm(
    settings_env: dict[str, str], http: aiohttp.ClientSession
) -> None:
    """The process binds the configured (free) port, answers /healthz and /metrics, and exits 0 on SIGTERM."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.metrics", cwd=ROOT, env=os.environ | settings_env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        port = await asyncio.wait_for(listening_port(proc.stdout), timeout=30)
        async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200
        async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
            assert "quicfleet_vms" in await response.text()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), timeout=30)
    assert code == 0


async def test_port_in_use_stops_the_process_with_a_clear_log_line(settings_env: dict[str, str]) -> None:
    """A metrics port already taken makes the process log `http.bind_failed` naming it and exit non-zero."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.metrics", cwd=ROOT,
            env=os.environ | settings_env | {"QUICFLEET_METRICS_PORT": str(port)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode != 0
    failures = [json.loads(line) for line in out.splitlines() if b"http.bind_failed" in line]
    assert failures and failures[0]["port"] == port
