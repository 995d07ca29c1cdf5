"""L4 passthrough benchmark: the kernel forwarding clients' QUIC to Caddy VMs, against talking to a VM directly.

`python -m bench l4` (root: namespaces and nftables). In namespaces (`bench._l4net`): h2load in a
client namespace, a host namespace with the virtual address, a bridge, NATS and the balancer, and
two Caddy HTTP/3 "VMs". Every round measures two groups (their order alternating between rounds),
each starting with its own reference:

- direct: h2load to one VM's own address (routed through the host, no NAT, no table: the reference);
- l4, 1 VM and 2 VMs: `python -m services.balancer` with `balancer_mode=l4` on the host; or
- l7, 1 VM and 2 VMs: the same balancer in its default mode (HTTP/1.1 over TLS to the VMs).

Cores: the balancer alone on the host core, h2load and the VMs on the other; RPS puts the host
side's packet work (forwarding, NAT, conntrack: softirq) on the host core too, so that core's busy
time per request is the host's CPU per request. Then a round of 100 atomic map changes under load
(the l4 balancer's own passthrough glue, driven directly) counts failed requests.

Settings: QUICFLEET_BENCH_ROUNDS (3), QUICFLEET_BENCH_SECONDS (5), QUICFLEET_BENCH_H2LOAD (`bench._h2load`).
h2load is required: a Python generator would be the bottleneck of a kernel path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import _h2load
from bench._l4changes import map_changes
from bench._l4net import BenchNet
from bench._l4run import CoreTime, background, balancer, h2load, wait_serving
from bench._ratios import spread
from bench._shares import Share, describe
from ops.lab import netns
from ops.natsserver import NatsServer

L4_PORT, L7_PORT = 8443, 8444
THROUGHPUT = (8, 16)
"""h2load connections x streams per connection (closed loop)."""


@dataclass
class Scenario:
    """One row of the table and every round's measurement of it."""

    key: str
    label: str
    rounds: list[dict[str, Any]] = field(default_factory=list)


SCENARIOS = [Scenario("direct", "direct to 1 VM"), Scenario("l4-1", "l4 to 1 VM"), Scenario("l4-2", "l4 to 2 VMs"),
             Scenario("l7-1", "l7 balancer to 1 VM"), Scenario("l7-2", "l7 balancer to 2 VMs")]


class Bench:
    """The namespaces, NATS, h2load and the measurement of one scenario in one round."""

    def __init__(self, net: BenchNet, nats_url: str, binary: str, work: Path, seconds: int) -> None:
        self.net, self.nats_url, self.binary, self.work, self.seconds = net, nats_url, binary, work, seconds

    def measure(self, url: str, host_procs: list[tuple[str, Callable[[], float]]]) -> dict[str, Any]:
        """Throughput with CPU: the host core (irq+softirq, busy), the host processes, h2load and the VMs."""
        core = self.net.host_core
        quiet = background(core)
        before_core, before_vms = CoreTime.read(core), self.net.vm_cpu()
        before_procs = [read() for _, read in host_procs]
        started = time.monotonic()
        conns, streams = THROUGHPUT
        run = h2load(self.net, self.binary, url, _h2load.throughput_args(conns, streams, self.seconds, 1))
        wall = time.monotonic() - started
        spent = CoreTime.read(core).since(before_core)
        procs = [Share(name, read() - used, wall, core) for (name, read), used in zip(host_procs, before_procs,
                                                                                      strict=True)]
        own = sum(p.cpu_s for p in procs)
        requests = run.rps * (self.seconds + 1)  # the window includes the warm-up second

        def per_request(seconds: float) -> float:
            return seconds * 1e6 / requests if requests else float("nan")

        return {
            "rps": run.rps, "failed": run.failed + run.errored, "p50_busy": run.p50_ms,
            "host_us": per_request(spent.kernel + own),
            "host_net_us": per_request(max(0.0, spent.kernel - quiet.kernel * wall) + own),
            "kernel_us": per_request(spent.kernel), "proc_us": per_request(own),
            "core_busy": spent.busy / wall, "quiet": quiet.busy,
            "shares": [*procs, run.generator, *self.net.vm_shares(before_vms, wall)],
        }

    def group(self, mode: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Direct to the first VM (no balancer, no table), then one balancer process with that VM, then with both.

        Each balancer row keeps the direct figure measured just before it: on a shared machine the
        load of others drifts within a round, so a ratio is taken against its nearest reference.
        """
        reference = self.measure(f"https://{self.net.vms[0].address}/", [])
        yield "direct", reference
        port = L4_PORT if mode == "l4" else L7_PORT
        with balancer(self.net, self.nats_url, mode, port, self.work, self.binary, self.net.vms[:1]) as running:
            procs = [(f"{mode} balancer", running.cpu_seconds)]
            yield f"{mode}-1", self.measure(running.url, procs) | {"direct_rps": reference["rps"]}
            wait_serving(self.net, self.binary, running.url, self.net.vms, lambda: running.announce(self.net.vms))
            yield f"{mode}-2", self.measure(running.url, procs) | {"direct_rps": reference["rps"]}


def run_rounds(bench: Bench, rounds: int) -> None:
    """Each round runs the l4 group and the l7 group (each with its own direct reference), the first one
    alternating between rounds so that drift favours nobody."""
    by_key = {s.key: s for s in SCENARIOS}
    for index in range(rounds):
        for mode in ("l4", "l7") if index % 2 == 0 else ("l7", "l4"):
            for key, result in bench.group(mode):
                by_key[key].rounds.append(result)
                print(f"  round {index + 1}: {by_key[key].label}: {result['rps']:.0f} req/s, host "
                      f"{result['host_us']:.1f} us/req, failed {result['failed']}", flush=True)


def _direct_ratio(rows: list[dict[str, Any]]) -> list[float]:
    """req/s against the direct run just before each row (1.0 for the direct rows themselves)."""
    return [row["rps"] / row.get("direct_rps", row["rps"]) for row in rows if row.get("direct_rps", row["rps"])]


def _ratio(rows: list[dict[str, Any]], base: list[dict[str, Any]], key: str) -> list[float]:
    return [row[key] / ref[key] for row, ref in zip(rows, base, strict=False) if ref[key]]


def report(host_core: str, load_core: str) -> list[str]:
    """The table (medians over rounds, ratios against the direct run just before) and the method."""
    lines = [f"{'scenario':<22} {'req/s':>7} {'x direct req/s':>18} {'host us/req':>11} {'net of bg':>9} "
             f"{'kernel':>7} {'process':>7} {'core busy':>9} {'p50 ms':>7} {'failed':>6}"]
    for s in SCENARIOS:
        med = {k: statistics.median(r[k] for r in s.rounds) for k in
               ("rps", "host_us", "host_net_us", "kernel_us", "proc_us", "core_busy", "p50_busy")}
        lines.append(f"{s.label:<22} {med['rps']:>7.0f} {spread(_direct_ratio(s.rounds)):>18} "
                     f"{med['host_us']:>11.1f} {med['host_net_us']:>9.1f} {med['kernel_us']:>7.1f} "
                     f"{med['proc_us']:>7.1f} {med['core_busy']:>9.0%} {med['p50_busy']:>7.2f} "
                     f"{sum(r['failed'] for r in s.rounds):>6}")
    by_key = {s.key: s.rounds for s in SCENARIOS}
    lines += ["", *(f"{s.label}: CPU (last round) {describe(s.rounds[-1]['shares'])}; host core busy before the "
                    f"run (other work) {statistics.median(r['quiet'] for r in s.rounds):.0%}" for s in SCENARIOS), ""]
    lines.append(f"l4 1 VM vs direct, req/s: {spread(_direct_ratio(by_key['l4-1']))} (target >= 0.95)")
    for n in ("1", "2"):
        cpu = spread(_ratio(by_key[f"l4-{n}"], by_key[f"l7-{n}"], "host_net_us"))
        lines.append(f"host CPU per request, l4 / l7, {n} VM(s): {cpu} (target <= 0.10)")
    return [*lines, "", *method(host_core, load_core)]


def method(host_core: str, load_core: str) -> list[str]:
    """How the CPU columns were measured, printed under the table."""
    return [
        f"Method: the balancer is pinned to core {host_core}; h2load and the Caddy VMs (GOMAXPROCS=1) to core "
        f"{load_core}; all at nice -10. RPS steers every packet the host namespace receives (its client side and the",
        f"VM bridge ports) to core {host_core} and what the client and the VMs receive to core {load_core}, so the "
        f"host kernel's forwarding, NAT and conntrack run as irq+softirq on core {host_core} (at interrupt exit or in",
        "ksoftirqd). host us/req = (that core's irq+softirq time in /proc/stat + the balancer process's CPU from "
        "/proc/<pid>/stat) / the run's requests",
        "(req/s x (duration + 1 s warm-up)); 'net of bg' subtracts the core's irq+softirq rate in the second before "
        "the run (other work on this shared machine); kernel / process: the two parts. 'core busy' is the core's",
        "whole busy share, other people's processes included (shown, not used). x direct: each row against the "
        "direct run measured just before its balancer started; l4 / l7: per round; median [min-max].",
    ]


def main() -> None:
    started = time.monotonic()
    binary = _h2load.find()
    if binary is None or os.geteuid() != 0:
        print("bench l4 needs root (namespaces, nftables) and h2load with HTTP/3 (QUICFLEET_BENCH_H2LOAD, PATH or "
              "../shared/tools/h2load); skipped")
        return
    available = sorted(os.sched_getaffinity(0))
    host_core, load_core = str(available[0]), str(available[-1])
    rounds = int(os.environ.get("QUICFLEET_BENCH_ROUNDS", "3"))
    seconds = int(os.environ.get("QUICFLEET_BENCH_SECONDS", "5"))
    print(f"host (balancer, host-side softirq) on core {host_core}; h2load and 2 Caddy VMs on core {load_core}; "
          f"{rounds} rounds, {seconds} s per run, {THROUGHPUT[0]} connections x {THROUGHPUT[1]} streams", flush=True)
    with _stack(host_core, load_core) as bench:
        run_rounds(bench, rounds)
        table = report(host_core, load_core)
        changes = map_changes(bench.net, bench.binary, L4_PORT)
    print("\n" + "\n".join([*table, "", *changes]))
    print(f"bench took {time.monotonic() - started:.0f} s")


@contextlib.contextmanager
def _stack(host_core: str, load_core: str) -> Iterator[Bench]:
    """A scratch folder, the namespaces with 2 VMs, NATS inside the host namespace; all removed afterwards."""
    binary = _h2load.find()
    assert binary is not None
    work = Path(tempfile.mkdtemp(prefix="qf-bench-l4-"))
    with BenchNet(work, 2, host_core, load_core) as net:
        (work / "nats").mkdir()
        with netns.entered(net.host_ns):
            nats = NatsServer(work / "nats")
            nats.start()
        try:
            yield Bench(net, nats.url, binary, work, int(os.environ.get("QUICFLEET_BENCH_SECONDS", "5")))
        except BaseException:
            print(f"bench l4 failed: logs kept in {work}")
            raise
        finally:
            nats.stop()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
