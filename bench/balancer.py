"""Balancer benchmark: req/s, p50 and p99 over HTTP/3 for direct, the balancer (both upstreams), Caddy.

`python -m bench balancer` (or `python -m bench.balancer`); with `QUICFLEET_BENCH_BASELINE_REV=<git rev>`
the HTTP/3-upstream balancer of that revision is measured too (before/after in one run). The system
under test is pinned to one core and the load generator plus backends to another (taskset);
absolute numbers drift on shared machines, so read the ratios, which come from one run.
Bounded to well under two minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._sut import Sut, balancer_sut, caddy_sut, direct_sut, start_backends
from ops.natsserver import NatsServer, free_port

ROOT = Path(__file__).resolve().parents[1]
THROUGHPUT = {"conns": 8, "streams": 16, "seconds": 3.0, "warmup": 0.5}
ONE_IN_FLIGHT = {"conns": 1, "streams": 1, "seconds": 1.5, "warmup": 0.3}


def cores() -> tuple[str, str]:
    """(core for the system under test, cores for load and backends)."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return str(available[0]), str(available[0])
    return str(available[0]), ",".join(str(c) for c in available[1:])


def load(port: int, cores: str, shape: dict[str, Any]) -> dict[str, Any]:
    """Run one load-generator process per core in `cores` (connections split between them).

    Returns req/s summed over the processes, and p50/p99 (ms) over all their requests.
    """
    pinned = cores.split(",")[: max(1, int(shape["conns"]))]
    per_process = {**shape, "conns": max(1, int(shape["conns"]) // len(pinned))}
    args = [f"--{k}={v}" for k, v in per_process.items()]
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for index, core in enumerate(pinned):
            out = f"--out={tmp}/{index}.json"
            cmd = ["taskset", "-c", core, sys.executable, "-m", "bench._h3load", f"--port={port}", out, *args]
            procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        errors = [(p, p.communicate(timeout=120)[1]) for p in procs]
        failed = [stderr for p, stderr in errors if p.returncode != 0]
        if failed:
            print(f"load generator failed: {failed[0][-300:].decode(errors='replace')}")
            return {"rps": 0.0, "p50": float("nan"), "p99": float("nan"), "errors": -1}
        parts = [json.loads(Path(f"{tmp}/{i}.json").read_text()) for i in range(len(pinned))]
    latencies = sorted(x for part in parts for x in part["latencies"]) or [float("nan")]
    return {
        "rps": sum(part["completed"] for part in parts) / shape["seconds"],
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "errors": sum(part["errors"] for part in parts),
    }


def measure(sut: Sut, load_core: str) -> dict[str, Any]:
    """Throughput at 8x16 in flight, then latency at one request in flight."""
    cpu_before = sut.cpu_seconds()
    busy = load(sut.port, load_core, THROUGHPUT)
    cpu = sut.cpu_seconds() - cpu_before
    calm = load(sut.port, load_core, ONE_IN_FLIGHT)
    total = busy["rps"] * (THROUGHPUT["seconds"] + THROUGHPUT["warmup"])
    return {"rps": busy["rps"], "p50": busy["p50"], "p99": busy["p99"], "errors": busy["errors"],
            "p50_1": calm["p50"], "p99_1": calm["p99"], "cpu_us": cpu * 1e6 / total if total else float("nan")}


def rss_at_connections(sut: Sut, load_core: str, count: int = 1000) -> tuple[float, float, int]:
    """Balancer RSS (MiB) idle and with `count` open HTTP/3 connections (one GET done on each)."""
    before = sut.rss_mib()
    cmd = ["taskset", "-c", load_core, sys.executable, "-m", "bench._h3load", f"--port={sut.port}",
           f"--conns={count}", "--hold"]
    holder = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()
        opened = json.loads(line)["ok"] if line else 0
        during = sut.rss_mib()
    finally:
        holder.kill()
        holder.wait()
    return before, during, opened


def row(name: str, result: dict[str, Any], base: dict[str, Any], peer: dict[str, Any] | None) -> str:
    """One line: measured figures, then ratios to direct and to Caddy (req/s, per-core capacity, p50)."""
    vs_base = result["rps"] / base["rps"] if base["rps"] else float("nan")
    vs_peer = f"{result['rps'] / peer['rps']:.2f}" if peer and peer["rps"] else "-"
    core_peer = f"{peer['cpu_us'] / result['cpu_us']:.2f}" if peer and result["cpu_us"] else "-"
    lat_peer = f"{result['p50_1'] / peer['p50_1']:.2f}" if peer and peer["rps"] else "-"
    return (f"{name:<28} {result['rps']:>7.0f} {result['p50']:>7.2f} {result['p99']:>7.2f} {result['errors']:>4} "
            f"{result['p50_1']:>6.3f} {result['p99_1']:>6.2f} {result['cpu_us']:>6.0f} {1e6 / result['cpu_us']:>7.0f} "
            f"{vs_base:>7.2f} {vs_peer:>6} {core_peer:>7} {lat_peer:>7}")


def main() -> None:
    started = time.monotonic()
    sut_core, load_core = cores()
    print(f"system under test on core {sut_core}; load generator and backends on {load_core}")
    print(f"throughput shape {THROUGHPUT}; latency shape {ONE_IN_FLIGHT}")
    with tempfile.TemporaryDirectory(prefix="qf-bench-") as tmp:
        work = Path(tmp)
        (work / "nats").mkdir()
        nats = NatsServer(work / "nats")
        nats.start()
        backend_port = free_port()
        backends = start_backends(work, backend_port, load_core)
        results: dict[str, dict[str, Any]] = {}
        extra: list[str] = []
        try:
            results = run_scenarios(work, nats.url, backend_port, sut_core, load_core, extra)
        finally:
            backends.stop()
            nats.stop()
    report(results, extra)
    print(f"bench took {time.monotonic() - started:.0f} s")


def run_scenarios(
    work: Path, nats_url: str, backend_port: int, sut_core: str, load_core: str, extra: list[str]
) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    with direct_sut(work, sut_core) as sut:
        results["direct aioquic"] = measure(sut, load_core)
    with balancer_sut(work, nats_url, backend_port, sut_core, "http1") as sut:
        results["balancer, HTTP/1.1 upstream"] = measure(sut, load_core)
        before, during, opened = rss_at_connections(sut, load_core)
        extra.append(f"balancer RSS: {before:.1f} MiB idle, {during:.1f} MiB with {opened} open connections "
                     f"({(during - before) * 1024 / max(opened, 1):.1f} KiB per connection)")
    with balancer_sut(work, nats_url, backend_port, sut_core, "http1", ack_with_response=False, coalesce_ms=0) as sut:
        results["  plain aioquic sends"] = measure(sut, load_core)
    with balancer_sut(work, nats_url, backend_port, sut_core, "http1", ack_delay_ms=0.0) as sut:
        results["  ACK delay 0"] = measure(sut, load_core)
    with balancer_sut(work, nats_url, backend_port, sut_core, "http3") as sut:
        results["balancer, HTTP/3 upstream"] = measure(sut, load_core)
    baseline = os.environ.get("QUICFLEET_BENCH_BASELINE_REV")
    if baseline:
        with balancer_sut(work, nats_url, backend_port, sut_core, "http3", root=checkout(baseline, work)) as sut:
            results[f"  HTTP/3 upstream @{baseline[:12]}"] = measure(sut, load_core)
    scale_workers(work, nats_url, backend_port, results, extra)
    if shutil.which("caddy"):
        with caddy_sut(work, backend_port, sut_core) as sut:
            results["caddy reverse_proxy (h1)"] = measure(sut, load_core)
    else:
        extra.append("caddy not installed: no peer figures (apt-get install caddy)")
    return results


def checkout(rev: str, work: Path) -> Path:
    """The services/ and shared/ trees of git revision `rev`, to run a baseline in the same run."""
    target = work / "baseline"
    target.mkdir(exist_ok=True)
    archive = subprocess.run(["git", "archive", rev, "services", "shared"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def scale_workers(
    work: Path, nats_url: str, backend_port: int, results: dict[str, dict[str, Any]], extra: list[str]
) -> None:
    """Two SO_REUSEPORT workers on two cores against one worker on one (needs 4+ cores)."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 4:
        extra.append(f"workers scaling skipped: needs 4+ cores (2 balancer, 2+ load), have {len(available)}")
        return
    load_cores = ",".join(str(c) for c in available[2:])
    with balancer_sut(work, nats_url, backend_port, f"{available[0]},{available[1]}", "http1", workers=2) as sut:
        two = load(sut.port, load_cores, THROUGHPUT)
    with balancer_sut(work, nats_url, backend_port, str(available[0]), "http1") as sut:
        one = load(sut.port, load_cores, THROUGHPUT)
    extra.append(f"workers: 1 worker {one['rps']:.0f} req/s, 2 workers on 2 cores {two['rps']:.0f} req/s "
                 f"({two['rps'] / one['rps'] if one['rps'] else float('nan'):.2f}x)")


def report(results: dict[str, dict[str, Any]], extra: list[str]) -> None:
    base = results.get("direct aioquic", {"rps": 0})
    peer = results.get("caddy reverse_proxy (h1)")
    print(f"{'':<28} {'req/s':>7} {'p50ms':>7} {'p99ms':>7} {'errs':>4} {'1:p50':>6} {'1:p99':>6} {'us/req':>6} "
          f"{'req/cpu':>7} {'xdirect':>7} {'xcaddy':>6} {'cpu_xc':>7} {'p50_xc':>7}")
    for name, result in results.items():
        print(row(name, result, base, peer))
    for line in extra:
        print(line)
    print("req/s, p50ms, p99ms at 8x16 in flight; 1:p50/1:p99 ms at one in flight; us/req = SUT CPU per request;")
    print("req/cpu = 1e6/us (capacity of one fully used core); x* = ratios (cpu_xc: per-core capacity vs Caddy)")


if __name__ == "__main__":
    main()
