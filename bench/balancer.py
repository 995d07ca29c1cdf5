"""Balancer benchmark against Caddy's reverse proxy, with a load generator nobody here wrote.

`python -m bench balancer`. Every system under test (Caddy's HTTP/3 reverse proxy, the balancer
on each QUIC engine with each upstream protocol) runs pinned alone on one core; h2load (HTTP/3)
and the Caddy backends share the other. Each round measures every system in turn (interleaved,
so drift hits all alike): throughput at 8 connections x 16 streams, latency at one request in
flight, CPU per request, and memory with 1,000 open connections. Ratios are against Caddy in the
same round; the table prints their median and spread over the rounds, and each throughput row
says whether the system under test was the bottleneck (CPU shares of every process).

Settings: QUICFLEET_BENCH_ROUNDS (3), QUICFLEET_BENCH_SECONDS (3), QUICFLEET_BENCH_H2LOAD (see
`bench._h2load`), QUICFLEET_BENCH_SYSTEMS (comma-separated names to keep, e.g. `caddy,aioquic-h1`),
QUICFLEET_BENCH_BASELINE_REV (also run the aioquic HTTP/1.1 balancer of that git revision, and print what
everything since costs: e.g. the revision before request validation, for its req/s and CPU per request).
A round whose Caddy stayed under 95% of its core is flagged and left out of the ratios (`bench._ratios`).
Without h2load the bench falls back to its Python generator and says, on every ratio line, that
the figures are load-generator bound.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import _h2load
from bench._ratios import baseline_flags, ratios, spread
from bench._shares import Share, bottleneck, describe
from bench._sut import Sut, balancer_sut, caddy_backends, caddy_sut
from ops.natsserver import NatsServer

ROOT = Path(__file__).resolve().parents[1]
HOLD_CONNECTIONS = 1000


@dataclass
class System:
    """One system under test and what every round measured of it."""

    key: str
    label: str
    start: Callable[[], contextlib.AbstractContextManager[Sut]]
    rounds: list[dict[str, Any]] = field(default_factory=list)


def cores() -> tuple[str, str]:
    """(core for the system under test, cores for load and backends)."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return str(available[0]), str(available[0])
    return str(available[0]), ",".join(str(c) for c in available[1:])


def systems(work: Path, nats_url: str, h1_port: int, h3_port: int, core: str) -> list[System]:
    """Caddy's proxy, then the balancer on each engine and upstream protocol (shipped defaults)."""
    found = [System("caddy", "caddy reverse_proxy, h3 -> h1", lambda: caddy_sut(work, h1_port, core))]
    for engine in ("aioquic", "qh3"):
        for upstream, port in (("h1", h1_port), ("h3", h3_port)):
            found.append(System(
                f"{engine}-{upstream}", f"balancer {engine}, {upstream} upstream",
                _balancer(work, nats_url, port, core, f"http{upstream[1]}", engine),
            ))
    for key, label, off in (("aioquic-h1-nosteer", "steering off", {"quic_steering": "false"}),
                            ("aioquic-h1-nolog", "access log off", {"balancer_access_log": "false"})):
        found.append(System(key, f"balancer aioquic, h1 upstream, {label}",
                            _balancer(work, nats_url, h1_port, core, "http1", "aioquic", features=off)))
    malloc = {"PYTHONMALLOC": "malloc"}  # glibc for Python's small objects: memory malloc_trim can give back
    found.append(System("aioquic-h1-malloc", "balancer aioquic, h1 upstream, PYTHONMALLOC=malloc",
                        _balancer(work, nats_url, h1_port, core, "http1", "aioquic", process_env=malloc)))
    baseline = os.environ.get("QUICFLEET_BENCH_BASELINE_REV")
    if baseline:
        root = checkout(baseline, work)
        found.append(System("baseline", f"balancer @{baseline[:12]}, h1 upstream",
                            _balancer(work, nats_url, h1_port, core, "http1", "aioquic", root)))
    keep = {k.strip() for k in os.environ.get("QUICFLEET_BENCH_SYSTEMS", "").split(",") if k.strip()}
    return [s for s in found if not keep or s.key in keep or s.key == "caddy"]


def _balancer(
    work: Path, nats_url: str, port: int, core: str, upstream: str, engine: str, root: Path = ROOT,
    features: dict[str, str] | None = None, process_env: dict[str, str] | None = None,
) -> Callable[[], contextlib.AbstractContextManager[Sut]]:
    """A balancer system; `features` turns some off to measure what they cost, `process_env` changes the process
    around it (e.g. its allocator), each in the same run with the same backends."""
    return lambda: balancer_sut(work, nats_url, port, core, upstream, engine=engine, root=root, features=features,
                                process_env=process_env)


def checkout(rev: str, work: Path) -> Path:
    """The services/ and shared/ trees of git revision `rev`, to run a baseline in the same run."""
    target = work / "baseline"
    target.mkdir(exist_ok=True)
    archive = subprocess.run(["git", "archive", rev, "services", "shared"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


class Measure:
    """The three measurements of one system in one round, with h2load or the fallback generator."""

    def __init__(self, h2load: str | None, sut_core: str, load_core: str, backends: Sut, seconds: int) -> None:
        self.h2load = h2load
        self.sut_core = sut_core
        self.load_core = load_core.split(",", maxsplit=1)[0]
        self.backends = backends
        self.seconds = seconds

    def round(self, sut: Sut, everyone: list[Sut]) -> dict[str, Any]:
        """Throughput (with CPU shares), one-in-flight latency, memory with many connections."""
        settle(everyone)
        busy, shares = self._throughput(sut)
        calm = self._run(sut, _h2load.throughput_args(1, 1, self.seconds, 1))
        idle, held = self._rss(sut)
        window = busy.rps * (self.seconds + 1)
        return {
            "rps": busy.rps, "failed": busy.failed + busy.errored + calm.failed + calm.errored,
            "cpu_us": shares[0].cpu_s * 1e6 / window if window else float("nan"),
            "p50": calm.p50_ms, "p99": calm.p99_ms, "p50_busy": busy.p50_ms, "savings": busy.header_savings,
            "shares": shares, "flag": bottleneck(shares[0], shares[1:]), "sut_share": shares[0].share,
            "rss_idle": idle, "rss_held": held,
        }

    def _throughput(self, sut: Sut) -> tuple[_h2load.Run, list[Share]]:
        before_sut, before_backends = sut.cpu_seconds(), self.backends.cpu_seconds()
        started = time.monotonic()
        busy = self._run(sut, _h2load.throughput_args(8, 16, self.seconds, 1))
        wall = time.monotonic() - started
        shares = [sut.cpu_since(before_sut, wall, "system under test", self.sut_core),
                  self.backends.cpu_since(before_backends, wall, "caddy backends", self.load_core),
                  busy.generator]
        return busy, shares

    def _run(self, sut: Sut, args: list[str]) -> _h2load.Run:
        if self.h2load is None:
            conns, streams = int(args[args.index("-c") + 1]), int(args[args.index("-m") + 1])
            return _h2load.python_run(sut.port, self.load_core, conns, streams, self.seconds, 1)
        return _h2load.run(self.h2load, f"https://127.0.0.1:{sut.port}/", self.load_core, args)

    def _rss(self, sut: Sut) -> tuple[float, float]:
        """RSS idle, and with HOLD_CONNECTIONS open connections (sampled while they are open)."""
        idle = sut.rss_mib()
        if self.h2load is None:
            return idle, float("nan")
        argv = ["taskset", "-c", self.load_core, self.h2load, "--alpn-list=h3",
                *_h2load.hold_args(HOLD_CONNECTIONS, 5), f"https://127.0.0.1:{sut.port}/"]
        holder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(4)  # a benchmark's sampling point, not a test's wait: the connections are up by then
            held = sut.rss_mib()
        finally:
            holder.wait(30)
        return idle, held


def settle(suts: list[Sut], quiet: float = 0.05, deadline_s: float = 30.0) -> None:
    """Wait until no system under test uses more than `quiet` of a core (they share one).

    The one measured before may still be closing 1,000 connections; its work would be charged to
    the next one's figures.
    """
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        before = [sut.cpu_seconds() for sut in suts]
        time.sleep(0.5)  # a sampling window for a benchmark, not a wait in a test
        if all(sut.cpu_seconds() - used < quiet * 0.5 for sut, used in zip(suts, before, strict=True)):
            return


def run_rounds(found: list[System], measure: Measure, rounds: int) -> None:
    """Start every system, then measure each in turn, `rounds` times (interleaved, and each round starting
    one system later, so that a host slowing down or speeding up within a round favours nobody)."""
    with contextlib.ExitStack() as stack:
        running = [(system, stack.enter_context(system.start())) for system in found]
        everyone = [sut for _, sut in running]
        for index in range(rounds):
            shift = index % len(running)
            for system, sut in running[shift:] + running[:shift]:
                system.rounds.append(measure.round(sut, everyone))
                print(f"  round {index + 1}: {system.label}: {system.rounds[-1]['rps']:.0f} req/s", flush=True)


def report(found: list[System], generator_note: str) -> None:
    """The table: medians and spreads over rounds, ratios to Caddy of the same round."""
    peer = next(s for s in found if s.key == "caddy")
    print(f"\n{'system under test':<34} {'req/s':>7} {'x caddy req/s':>18} {'x caddy per core':>18} "
          f"{'p50 ms':>7} {'x caddy p50':>18} {'p99 ms':>7} {'us/req':>7} {'RSS 1k MiB':>10} {'failed':>6}")
    for system in found:
        keys = ("rps", "p50", "p99", "cpu_us", "rss_held")
        median = {k: statistics.median(r[k] for r in system.rounds) for k in keys}
        failed = sum(r["failed"] for r in system.rounds)
        print(f"{system.label:<34} {median['rps']:>7.0f} {spread(ratios(system.rounds, peer.rounds, 'rps')):>18} "
              f"{spread(ratios(system.rounds, peer.rounds, 'cpu_us', invert=True)):>18} {median['p50']:>7.3f} "
              f"{spread(ratios(system.rounds, peer.rounds, 'p50')):>18} {median['p99']:>7.3f} {median['cpu_us']:>7.0f} "
              f"{median['rss_held']:>10.1f} {failed:>6}{generator_note}")
    print()
    for system in found:
        last = system.rounds[-1]
        flags = [r["flag"] for r in system.rounds if r["flag"]]
        growth = [f"{r['rss_idle']:.0f}" for r in system.rounds]
        print(f"{system.label}: CPU at 8x16 {describe(last['shares'])}; QPACK header savings "
              f"{last['savings']:.1f}%; idle RSS by round {' -> '.join(growth)} MiB"
              + (f"; FLAGGED: {flags[0]}" if flags else ""))
    for line in [*feature_costs(found), *baseline_flags(peer.label, peer.rounds)]:
        print(line)
    print("\nreq/s at 8 connections x 16 streams; p50/p99 at one request in flight (h2load: until the stream is")
    print("closed, which includes the ACK of the request); x caddy = ratio to Caddy's proxy in the same round,")
    print("median [min-max] over rounds; per core = requests per CPU-second of the system under test vs Caddy's.")


def feature_costs(found: list[System]) -> list[str]:
    """What a feature costs: the shipped balancer against the same one with the feature off, per round."""
    by_key = {s.key: s for s in found}
    shipped = by_key.get("aioquic-h1")
    lines = []
    for key, feature in (("aioquic-h1-nosteer", "connection-ID steering"), ("aioquic-h1-nolog", "the access log"),
                         ("baseline", "everything since the baseline revision (e.g. request validation)")):
        off = by_key.get(key)
        if shipped is not None and off is not None:
            rps, cpu = (spread(ratios(shipped.rounds, off.rounds, key)) for key in ("rps", "cpu_us"))
            lines.append(f"cost of {feature} (aioquic, h1): req/s on/off {rps}, CPU per request on/off {cpu}")
    return lines


def worker_plan(available: list[int]) -> list[tuple[int, str, str]]:
    """(workers, their cores, the load's cores) for N = 1, 2, 4, 8 while half the cores or more
    stay for h2load and the backends; empty below 4 cores (then nothing can be compared)."""
    if len(available) < 4:
        return []
    load = available[len(available) // 2:]
    plan = []
    for n in (1, 2, 4, 8):
        if n <= len(available) // 2:
            plan.append((n, ",".join(map(str, available[:n])), ",".join(map(str, load))))
    return plan


def scale_workers(work: Path, nats_url: str, h2load: str | None, engine: str = "aioquic") -> list[str]:
    """N SO_REUSEPORT workers on N cores against one worker on one: req/s and the ratio to N x one."""
    plan = worker_plan(sorted(os.sched_getaffinity(0)))
    if not plan:
        return [f"worker scaling: cannot measure here ({len(os.sched_getaffinity(0))} cores; N workers vs 1 "
                "needs 4 or more: N for the workers, the rest for h2load and the backends)"]
    if h2load is None:
        return ["worker scaling: needs h2load (the Python generator would be the bottleneck)"]
    lines, single = [], 0.0
    backends, h1_port, _ = caddy_backends(work, plan[0][2], gomaxprocs=len(plan[0][2].split(",")))
    try:
        for n, sut_cores, load_cores in plan:
            with balancer_sut(work, nats_url, h1_port, sut_cores, "http1", workers=n, engine=engine) as sut:
                threads = str(len(load_cores.split(",")))
                args = ["-t", threads, "-c", str(8 * n * 4), "-m", "16", "--duration=5", "--warm-up-time=1"]
                rps = _h2load.run(h2load, f"https://127.0.0.1:{sut.port}/", load_cores, args).rps
            single = single or rps
            lines.append(f"worker scaling ({engine}): {n} worker(s) on cores {sut_cores}: {rps:.0f} req/s, "
                         f"{rps / single:.2f}x one worker (target >= {0.9 * n:.1f}x)")
    finally:
        backends.stop()
    return lines


def main() -> None:
    started = time.monotonic()
    sut_core, load_core = cores()
    h2load = _h2load.find()
    rounds = int(os.environ.get("QUICFLEET_BENCH_ROUNDS", "3"))
    seconds = int(os.environ.get("QUICFLEET_BENCH_SECONDS", "3"))
    print(f"system under test alone on core {sut_core}; h2load and Caddy backends on core {load_core.split(',')[0]}")
    note = ""
    if h2load is None:
        note = "  <- Python generator: load-generator bound, NOT comparable"
        print("no h2load with HTTP/3 (QUICFLEET_BENCH_H2LOAD, PATH, ../shared/tools/h2load): falling back to the "
              "project's Python generator; its figures measure the generator, not the proxies")
    print(f"load generator: {h2load or 'python -m bench._h3load'}; {rounds} rounds, {seconds} s per measurement")
    with _stack(load_core) as (work, nats_url, backends, h1_port, h3_port):
        found = systems(work, nats_url, h1_port, h3_port, sut_core)
        run_rounds(found, Measure(h2load, sut_core, load_core, backends, seconds), rounds)
    report(found, note)
    with _stack(load_core) as (work, nats_url, _backends, _h1, _h3):
        for line in scale_workers(work, nats_url, h2load):
            print(line)
    print(f"bench took {time.monotonic() - started:.0f} s")


@contextlib.contextmanager
def _stack(load_core: str) -> Iterator[tuple[Path, str, Sut, int, int]]:
    """A scratch folder, a nats-server and the Caddy backends, stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix="qf-bench-") as tmp:
        work = Path(tmp)
        (work / "nats").mkdir()
        nats = NatsServer(work / "nats")
        nats.start()
        backends, h1_port, h3_port = caddy_backends(work, load_core.split(",", maxsplit=1)[0])
        try:
            yield work, nats.url, backends, h1_port, h3_port
        finally:
            backends.stop()
            nats.stop()


if __name__ == "__main__":
    main()
