"""nghttp2's h2load (with HTTP/3) as the benchmark's load generator: found, run pinned, parsed.

An h2load given by `QUICFLEET_BENCH_H2LOAD`, else one on PATH that speaks HTTP/3, else the one
beside the checkout (`../shared/tools/h2load/h2load`) when it exists. h2load is C on ngtcp2 and
nghttp3: it costs far less CPU per request than any Python client, so it is not the bottleneck,
and nobody here wrote it. Nothing but the benchmarks uses it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench._shares import Share

ROOT = Path(__file__).resolve().parents[1]
BESIDE = ROOT.parent / "shared" / "tools" / "h2load" / "h2load"


def speaks_h3(path: str) -> bool:
    """Whether this h2load was built with HTTP/3 (Debian's is not)."""
    try:
        out = subprocess.run([path, "--help"], check=False, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "h3" in out and "--alpn-list" in out


def find() -> str | None:
    """The h2load to use, by the order in the module docstring; None when there is none."""
    given = os.environ.get("QUICFLEET_BENCH_H2LOAD")
    if given:
        return given
    on_path = shutil.which("h2load")
    if on_path and speaks_h3(on_path):
        return on_path
    return str(BESIDE) if BESIDE.exists() else None


@dataclass(frozen=True)
class Run:
    """What one h2load run measured."""

    rps: float
    done: int
    failed: int
    errored: int
    p50_ms: float
    p99_ms: float
    header_savings: float
    generator: Share


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse(out: str, generator: Share) -> Run:
    """h2load's report: req/s, request counts, the request-time row (median, p99), QPACK savings."""
    rps = re.search(r"finished in [\d.]+(?:ms|s), ([\d.]+) req/s", out)
    counts = re.search(
        r"requests: (\d+) total, \d+ started, (\d+) done, \d+ succeeded, (\d+) failed, (\d+) errored", out
    )
    row = re.search(r"^request\s*:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", out, re.M)
    savings = re.search(r"headers \(space savings ([\d.]+)%\)", out)
    if rps is None or counts is None:
        raise RuntimeError(f"h2load printed no result: {out[-400:]}")
    return Run(
        rps=float(rps.group(1)), done=int(counts.group(2)), failed=int(counts.group(3)),
        errored=int(counts.group(4)),
        p50_ms=_ms(row.group(3)) if row else float("nan"), p99_ms=_ms(row.group(5)) if row else float("nan"),
        header_savings=float(savings.group(1)) if savings else float("nan"), generator=generator,
    )


def run(binary: str, url: str, core: str, args: list[str], timeout_s: float = 120.0) -> Run:
    """One pinned h2load run over HTTP/3; its own CPU comes from the kernel's accounting (wait4)."""
    argv = ["taskset", "-c", core, binary, "--alpn-list=h3", *args, url]
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    guard = threading.Timer(timeout_s, proc.kill)
    guard.start()
    try:
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)  # taskset execs h2load: the same pid, its own rusage
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        guard.cancel()
    wall = time.monotonic() - started
    cpu = usage.ru_utime + usage.ru_stime
    return parse(out.decode(errors="replace"), Share("h2load", cpu, wall, core))


def throughput_args(conns: int, streams: int, seconds: int, warmup: int) -> list[str]:
    """Closed loop: `conns` connections with `streams` requests each in flight."""
    return ["-t", "1", "-c", str(conns), "-m", str(streams), f"--duration={seconds}", f"--warm-up-time={warmup}"]


def hold_args(conns: int, seconds: int) -> list[str]:
    """`conns` open connections, one request a second each (for memory at many connections)."""
    return ["-t", "1", "-c", str(conns), "-m", "1", "--rps=1", f"--duration={seconds}", "--warm-up-time=1"]


def python_run(port: int, core: str, conns: int, streams: int, seconds: int, warmup: int) -> Run:
    """The fallback: the project's own aioquic generator (`bench._h3load`), same shape, same `Run`.

    A Python client costs about as much CPU per request as the proxy it measures, so on a shared
    core it saturates first: figures from it compare generators, and the report says so.
    """
    import json
    import statistics
    import sys
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        argv = ["taskset", "-c", core, sys.executable, "-m", "bench._h3load", f"--port={port}", f"--conns={conns}",
                f"--streams={streams}", f"--seconds={seconds}", f"--warmup={warmup}", f"--out={result.name}"]
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, _, usage = os.wait4(proc.pid, 0)
        proc.returncode = 0
        wall = time.monotonic() - started
        data = json.loads(Path(result.name).read_text() or "{}")
    latencies = sorted(data.get("latencies", [])) or [float("nan")]
    return Run(
        rps=data.get("completed", 0) / seconds, done=data.get("completed", 0), failed=data.get("errors", 0),
        errored=0, p50_ms=statistics.median(latencies) * 1000,
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, header_savings=float("nan"),
        generator=Share("python generator", usage.ru_utime + usage.ru_stime, wall, core),
    )
