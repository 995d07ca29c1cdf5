"""`bench l4`'s last round: 100 atomic map changes under load, counting failed requests.

The balancer's own kernel glue (`services.balancer.l4.nft.Passthrough`, the object an l4 balancer
drives) is driven directly here, so the changes come as fast as one nftables transaction each
instead of at the pace of fleet events and health checks. The map alternates between both VMs, the
first alone, both, the second alone: every change adds or removes a VM. Meanwhile one long h2load
run keeps 8 connections (established flows that must stay on their VM whatever the map says),
and short h2load runs one after another open 8 new connections each (new flows hashed by whatever
map is there when their first packet arrives).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from bench._l4net import NICE, VM_PORT, BenchNet

CHANGES = 100
GAP_S = 0.05


class Kernel(Protocol):
    """What this round needs of `Passthrough`."""

    async def start(self) -> None: ...

    async def apply(self, targets: Sequence[Any]) -> bool: ...

    async def close(self) -> None: ...


def _counts(out: str) -> tuple[int, int, int]:
    """(total, done, succeeded) from h2load's `requests:` line (zeros when it printed none)."""
    found = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", out)
    return (int(found[1]), int(found[2]), int(found[3])) if found else (0, 0, 0)


def _h2load(net: BenchNet, binary: str, url: str, args: list[str]) -> str:
    core = net.load_core.split(",")[0]
    argv = net.wrap(net.client_ns, [*NICE, "taskset", "-c", core, binary, "--alpn-list=h3", *args, url])
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False).stdout


class ShortRuns(threading.Thread):
    """h2load runs of 8 fresh connections x 8 requests, one after another until stopped."""

    def __init__(self, net: BenchNet, binary: str, url: str) -> None:
        super().__init__(daemon=True)
        self.net, self.binary, self.url = net, binary, url
        self.stopping = threading.Event()
        self.runs = self.requests = self.failed = 0

    def run(self) -> None:
        while not self.stopping.is_set():
            total, _, succeeded = _counts(_h2load(self.net, self.binary, self.url, ["-t", "1", "-c", "8", "-n", "64",
                                                                                   "-m", "4"]))
            self.runs += 1
            self.requests += 64
            self.failed += 64 - succeeded if total else 64


def map_changes(net: BenchNet, binary: str, port: int) -> list[str]:
    """The round's result lines; a note instead when the passthrough glue is not importable."""
    try:
        from services.balancer.core.passthrough import L4Target, TableSpec
        from services.balancer.l4.nft import Passthrough
    except ImportError as error:
        return [f"100 map changes under load: not run ({error})"]
    url = f"https://{net.vip}:{port}/"
    targets = [L4Target(vm=f"vm{vm.index}", address=vm.ip, port=VM_PORT) for vm in net.vms]
    passthrough = Passthrough(TableSpec(vip=net.vip, port=port), netns=net.host_ns)
    return asyncio.run(_churn(net, binary, url, passthrough, targets))


async def _churn(net: BenchNet, binary: str, url: str, pt: Kernel, targets: list[Any]) -> list[str]:
    await pt.start()
    short = ShortRuns(net, binary, url)
    try:
        await pt.apply(targets)
        short.start()
        began = time.monotonic()
        for plan in [targets[:1], targets[1:], targets[:1], targets]:  # how long one change takes under load
            await pt.apply(plan)
        seconds = math.ceil(CHANGES * ((time.monotonic() - began) / 4 + GAP_S) * 4) + 10  # changes slow down under load
        holder: dict[str, str] = {}
        long = threading.Thread(target=lambda: holder.update(out=_h2load(
            net, binary, url, ["-t", "1", "-c", "8", "-m", "16", f"--duration={seconds}", "--warm-up-time=1"])))
        long.start()
        await asyncio.sleep(1.5)  # the long run's connections are up and past warm-up
        began, held = time.monotonic(), 0
        for plan in itertools.islice(itertools.cycle([targets, targets[:1], targets, targets[1:]]), CHANGES):
            await pt.apply(plan)
            held += long.is_alive()
            await asyncio.sleep(GAP_S)
        took = time.monotonic() - began
        short.stopping.set()
        await asyncio.to_thread(short.join)
        await asyncio.to_thread(long.join)
    finally:
        short.stopping.set()
        await pt.close()
    _, done, succeeded = _counts(holder.get("out", ""))
    return [
        f"{CHANGES} map changes under load in {took:.1f} s (one nftables transaction each, "
        f"{GAP_S * 1000:.0f} ms apart; both VMs, the first, both, the second, ...):",
        f"  8 connections held through {held} of them ({seconds} s run): {done} requests, {done - succeeded} failed"
        + ("" if done else " (h2load printed no result)"),
        f"  {short.runs} short runs opening 8 new connections each ({short.runs * 8} connections): {short.requests} "
        f"requests, {short.failed} failed",
    ]
