"""What `bench l4` runs inside its namespaces: h2load from the client, balancers on the host, CPU readings.

The host's CPU is its kernel's packet work plus the balancer process. `bench._l4net` steers the
host side's packet work onto the host core (RPS), where it runs as softirq (at interrupt exit or in
ksoftirqd), so that core's irq and softirq time in /proc/stat is the host kernel's share; the
balancer's own time comes from /proc/<pid>/stat. On a machine shared with other work the core's
total busy time also holds other people's processes, which is why it is shown but not used; a
second before each run measures the core's irq and softirq time without our load, and the report
shows the figure with and without it. Our processes run at nice -10 so that other work on a shared
machine takes little of their cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import _h2load
from bench._l4net import NICE, BenchNet, Vm
from bench._shares import Share
from ops.lab import netns
from shared.bus import Bus, connect
from shared.contract.events import VmState, VmStateChanged
from shared.contract.subjects import Subjects
from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
CLK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CoreTime:
    """One core's busy, and irq plus softirq, seconds so far (/proc/stat; idle and iowait are not busy)."""

    busy: float
    kernel: float

    @classmethod
    def read(cls, core: str) -> CoreTime:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith(f"cpu{core} "):
                user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in line.split()[1:9])
                return cls((user + nice + system + irq + softirq + steal) / CLK, (irq + softirq) / CLK)
        raise RuntimeError(f"no cpu{core} in /proc/stat")

    def since(self, before: CoreTime) -> CoreTime:
        return CoreTime(self.busy - before.busy, self.kernel - before.kernel)


def process_cpu(pid: int) -> float:
    """User plus system CPU seconds of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK


def background(core: str, seconds: float = 1.0) -> CoreTime:
    """The shares of `core` busy, and in irq and softirq, while no load of ours runs (a benchmark's sampling
    window, not a test's wait)."""
    before = CoreTime.read(core)
    time.sleep(seconds)
    spent = CoreTime.read(core).since(before)
    return CoreTime(spent.busy / seconds, spent.kernel / seconds)


def h2load(net: BenchNet, binary: str, url: str, args: list[str], timeout_s: float = 120.0) -> _h2load.Run:
    """One h2load run from the client namespace, pinned to the load core; its CPU from wait4 (ip execs it)."""
    core = net.load_core.split(",")[0]
    argv = net.wrap(net.client_ns, [*NICE, "taskset", "-c", core, binary, "--alpn-list=h3", *args, url])
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    guard = threading.Timer(timeout_s, proc.kill)
    guard.start()
    try:
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        guard.cancel()
    share = Share("h2load", usage.ru_utime + usage.ru_stime, time.monotonic() - started, core)
    return _h2load.parse(out.decode(errors="replace"), share)


def wait_serving(
    net: BenchNet, binary: str, url: str, vms: list[Vm], again: Callable[[], None], timeout_s: float = 60.0
) -> None:
    """Until short runs of fresh connections to `url` succeed and reach every VM in `vms` (their CPU moves);
    `again` runs before each try (announcing the VMs again: a balancer still starting missed the last one)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        again()
        before = [vm.cpu_seconds() for vm in vms]
        with contextlib.suppress(RuntimeError):
            done = h2load(net, binary, url, ["-t", "1", "-c", "8", "-n", "800", "-m", "4"], timeout_s=8)
            moved = all(vm.cpu_seconds() - used > 0 for vm, used in zip(vms, before, strict=True))
            if done.done == 800 and done.failed == 0 and moved:
                return
        time.sleep(0.5)  # a benchmark's start-up poll, not a test's wait
    raise RuntimeError(f"{url} did not serve from {[vm.address for vm in vms]} within {timeout_s:.0f} s (logs in "
                       f"{net.work})")


class Balancer:
    """`python -m services.balancer` in the host namespace, pinned to the host core, told of VMs over NATS."""

    def __init__(self, net: BenchNet, nats_url: str, mode: str, port: int, work: Path) -> None:
        self.net, self.nats_url, self.mode, self.port = net, nats_url, mode, port
        self.prefix = f"bench{mode}{port}"
        log = work / f"balancer-{mode}-{port}.log"
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                net.wrap(net.host_ns, [*NICE, "taskset", "-c", net.host_core, sys.executable, "-m",
                                       "services.balancer"]),
                cwd=ROOT, env=os.environ | self.env(work), stdout=out, stderr=subprocess.STDOUT,
            )

    @property
    def url(self) -> str:
        return f"https://{self.net.vip}:{self.port}/"

    def env(self, work: Path) -> dict[str, str]:
        """The shipped defaults, plus where it listens, its NATS, and for l4 the host's interfaces."""
        env = {
            "QUICFLEET_NATS_URL": self.nats_url, "QUICFLEET_LISTEN_HOST": self.net.vip,
            "QUICFLEET_LISTEN_PORT": str(self.port), "QUICFLEET_BALANCER_STATE_DIR": str(work / f"state-{self.mode}"),
            "QUICFLEET_BALANCER_LIST_WINDOW_S": "0.1", "QUICFLEET_BALANCER_SLOW_START_S": "0",
            "QUICFLEET_LOG_FORMAT": "json", "QUICFLEET_LOG_LEVEL": "warning",
            "QUICFLEET_INSTANCE": f"bench-{self.mode}",
            "QUICFLEET_SUBJECT_PREFIX": self.prefix, "QUICFLEET_UPSTREAM_TLS": "true",
            "QUICFLEET_BALANCER_MODE": self.mode,
        }
        if self.mode == "l4":
            env |= {"QUICFLEET_BALANCER_L4_VM_IFACE": self.net.bridge,
                    "QUICFLEET_BALANCER_L4_CLIENT_IFACES": self.net.client_iface,
                    "QUICFLEET_BALANCER_L4_CID_LENGTH": "4"}  # Caddy 2.6.2's quic-go
        return env

    def announce(self, vms: list[Vm]) -> None:
        """`fleet.vm.ready` for each VM, published from inside the host namespace (where NATS listens)."""
        with netns.entered(self.net.host_ns):
            asyncio.run(self._publish(vms))

    async def _publish(self, vms: list[Vm]) -> None:
        bus = Bus(await connect(ServiceSettings(nats_url=self.nats_url), "bench-l4"), Subjects(self.prefix))
        for vm in vms:
            event = VmStateChanged(vm=f"vm{vm.index}", state=VmState.READY, address=vm.address)
            await bus.publish(bus.subjects.vm(VmState.READY), event)
        await bus.drain()

    def cpu_seconds(self) -> float:
        return process_cpu(self.proc.pid)

    def stop(self) -> None:
        """SIGTERM (an l4 balancer removes its table then), SIGKILL after a grace period."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def balancer(net: BenchNet, nats_url: str, mode: str, port: int, work: Path, binary: str,
             vms: list[Vm]) -> Iterator[Balancer]:
    """A balancer serving `vms` (checked through h2load from the client), stopped afterwards."""
    running = Balancer(net, nats_url, mode, port, work)
    try:
        wait_serving(net, binary, running.url, vms, lambda: running.announce(vms))
        yield running
    finally:
        running.stop()
