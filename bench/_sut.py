"""Systems under test for the balancer benchmark, each a pinned process started and stopped here."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench._h3load import probe
from bench._shares import Share
from ops.natsserver import free_port
from shared.bus import Bus, connect
from shared.contract.events import VmState, VmStateChanged
from shared.contract.subjects import Subjects
from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]


class Sut:
    """A process listening on `port` (UDP, HTTP/3)."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc = proc
        self.port = port

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the process (all threads) so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def cpu_since(self, before: float, wall_s: float, name: str, cores: str) -> Share:
        """This process's CPU share since `before` (seconds from `cpu_seconds`) over `wall_s`."""
        return Share(name, self.cpu_seconds() - before, wall_s, cores)

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _pinned(
    core: str, args: list[str], env: dict[str, str] | None = None, log: Path | None = None, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(["taskset", "-c", core, *args], cwd=cwd, env=os.environ | (env or {}),
                            stdout=out, stderr=subprocess.STDOUT)


def _wait_h3(port: int, timeout: float = 20.0) -> None:
    """Until an HTTP/3 GET on `port` answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if asyncio.run(probe(port)) == 200:
            return
        time.sleep(0.2)
    raise TimeoutError(f"nothing answered HTTP/3 on port {port}")


def _serving(sut: Sut) -> Iterator[Sut]:
    """Yield `sut` once it answers HTTP/3, and stop it afterwards whatever happened."""
    try:
        _wait_h3(sut.port)
        yield sut
    finally:
        sut.stop()


def caddy_backends(work: Path, core: str, gomaxprocs: int = 1) -> tuple[Sut, int, int]:
    """Caddy (one Go thread) as the VMs: `Server Address` over HTTP/1.1 on one port, HTTP/3 on another.

    Caddy serves a fixed body at ~20k req/s per core, so the backends are never what a proxy
    benchmark measures. Returns the process, the HTTP/1.1 port and the HTTP/3 port.
    """
    from shared.certs import ensure_dev_certificate

    cert, key = ensure_dev_certificate(work)
    h1, h3 = free_port(), free_port()
    config = work / "Caddyfile.backends"
    config.write_text(
        "{\n\tadmin off\n\tauto_https off\n\tdefault_sni 127.0.0.1\n\tservers {\n\t\tprotocols h1 h2 h3\n\t}\n}\n"
        f"http://127.0.0.1:{h1} {{\n\trespond \"Server Address: 127.0.0.1:{h1}\"\n}}\n"
        f"https://127.0.0.1:{h3} {{\n\ttls {cert} {key}\n\trespond \"Server Address: 127.0.0.1:{h3}\"\n}}\n"
    )
    home = str(work / "caddy-b")
    env = {"GOMAXPROCS": str(gomaxprocs), "XDG_DATA_HOME": home, "XDG_CONFIG_HOME": home, "HOME": str(work)}
    proc = _pinned(core, ["caddy", "run", "--config", str(config), "--adapter", "caddyfile"], env,
                   work / "caddy-backends.log")
    sut = Sut(proc, h3)
    _wait_h3(h3)
    return sut, h1, h3


async def _announce(nats_url: str, backend_port: int, prefix: str) -> None:
    bus = Bus(await connect(ServiceSettings(nats_url=nats_url), "bench"), Subjects(prefix))
    event = VmStateChanged(vm="bench-vm", state=VmState.READY, address=f"127.0.0.1:{backend_port}")
    # only the fields set: a baseline revision's balancer may refuse fields added since (e.g. `deadline_s`)
    await bus.nc.publish(bus.subjects.vm(VmState.READY), event.model_dump_json(exclude_unset=True).encode())
    await bus.drain()


@contextmanager
def balancer_sut(
    work: Path, nats_url: str, backend_port: int, core: str, upstream: str, workers: int = 1, root: Path = ROOT,
    engine: str = "aioquic", features: dict[str, str] | None = None, process_env: dict[str, str] | None = None,
    **tuning: str,
) -> Iterator[Sut]:
    """A balancer process on the shipped defaults; `tuning` sets QUICFLEET_<KEY> variables on top
    (e.g. quic_coalesce_ms="0"), as does `features` (a dict, for callers that build it); `process_env` sets
    other variables as they are (e.g. PYTHONMALLOC); `root` runs the code of another checkout (a baseline
    revision)."""
    tuning = {**tuning, **(features or {})}
    port = free_port()
    env = {
        "QUICFLEET_NATS_URL": nats_url, "QUICFLEET_LISTEN_PORT": str(port), "QUICFLEET_UPSTREAM_PROTOCOL": upstream,
        "QUICFLEET_BALANCER_STATE_DIR": str(work), "QUICFLEET_BALANCER_LIST_WINDOW_S": "0.1",
        "QUICFLEET_BALANCER_SLOW_START_S": "0", "QUICFLEET_LOG_FORMAT": "json", "QUICFLEET_INSTANCE": "bench",
        "QUICFLEET_LOG_LEVEL": "warning", "QUICFLEET_BALANCER_WORKERS": str(workers),
        "QUICFLEET_SUBJECT_PREFIX": f"bench{port}",  # balancers running side by side each see only their VM
        "QUICFLEET_QUIC_ENGINE": engine, **{f"QUICFLEET_{key.upper()}": value for key, value in tuning.items()},
        **(process_env or {}),
    }
    proc = _pinned(core, [sys.executable, "-m", "services.balancer"], env, work / f"balancer-{port}.log", root)
    sut = Sut(proc, port)
    try:
        deadline = time.monotonic() + 30
        while True:
            asyncio.run(_announce(nats_url, backend_port, f"bench{port}"))
            if asyncio.run(probe(port)) == 200:
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"balancer did not serve; see {work}/balancer-{port}.log")
            time.sleep(0.3)
        yield sut
    finally:
        sut.stop()


@contextmanager
def caddy_sut(work: Path, backend_port: int, core: str) -> Iterator[Sut]:
    """Caddy as HTTP/3 reverse proxy to the HTTP/1.1 backend, one Go thread on the SUT core."""
    from shared.certs import ensure_dev_certificate

    cert, key = ensure_dev_certificate(work)
    port = free_port()
    config = work / "Caddyfile"
    config.write_text(
        "{\n\tadmin off\n\tdefault_sni 127.0.0.1\n\tauto_https off\n\tservers {\n\t\tprotocols h1 h2 h3\n\t}\n}\n"
        f"https://127.0.0.1:{port} {{\n\ttls {cert} {key}\n\treverse_proxy 127.0.0.1:{backend_port}\n}}\n"
    )
    env = {"GOMAXPROCS": "1", "XDG_DATA_HOME": str(work / "caddy"), "XDG_CONFIG_HOME": str(work / "caddy"),
           "HOME": str(work)}
    proc = _pinned(core, ["caddy", "run", "--config", str(config), "--adapter", "caddyfile"], env, work / "caddy.log")
    yield from _serving(Sut(proc, port))
