"""Steady HTTP/3 load through the balancer, from a client process inside the lab's namespace."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.e2e.vms import H3_CLIENT


class LoadRun:
    """One h3client `load` process: sequential idempotent GETs until `stop()`."""

    def __init__(self, wrap: list[str], url: str, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.stop_file = workdir / "stop"
        self.progress_file = workdir / "progress.json"
        self.stop_file.unlink(missing_ok=True)
        self.progress_file.unlink(missing_ok=True)
        argv = [*wrap, sys.executable, str(H3_CLIENT), "load", url, "--stop-file", str(self.stop_file)]
        self.process = subprocess.Popen(
            [*argv, "--progress", str(self.progress_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def progress(self) -> dict[str, Any]:
        """The latest counts the client wrote (empty counts before its first write)."""
        try:
            found: dict[str, Any] = json.loads(self.progress_file.read_text())
        except (OSError, ValueError):
            return {"ok": 0, "failed": 0, "bodies": {}, "failures": {}}
        return found

    def seen(self, address: str) -> bool:
        """Whether any answer came from the backend at `address` (host:port)."""
        return f"Server Address: {address}" in self.progress()["bodies"]

    def stop(self) -> dict[str, Any]:
        """Stop the client and return its final counts."""
        self.stop_file.touch()
        try:
            out, err = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
        assert self.process.returncode == 0, f"load client failed: {err[-600:]}"
        result: dict[str, Any] = json.loads(out)
        return result
