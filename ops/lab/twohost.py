"""Two hypervisor hosts on one machine: two labs (namespace, libvirtd, DHCP network and template
each) wired together by a veth pair, so a fleet can be spread over two hosts and one can be lost.

    pair = TwoHostLab(workdir, name="quicfleet-lab2")
    first, second = pair.start()      # a LabInfo per host; stale halves of a dead owner are reclaimed
    pair.wire_address(0)              # "10.76.0.1": NATS listens there for the second host
    pair.cut(); pair.mend()           # the second host's end of the wire down / up again
    pair.stop()                       # both labs and the wire; safe after a failure and twice

`TwoHostLab(workdir, spread=True)` adds the outer spread of an `l4` fleet (`ops.lab.edge.Spread`):
a client namespace `<name>-c` wired to both hosts, the anycast VIP 10.75.255.10 on each, and the
client's ECMP route over both (L4 hash), so each host's balancer serves its own VMs.

| namespace  | guests (bridge `qfbr0` at .1) | wire (`qflink`) | route                      |
|------------|-------------------------------|-----------------|----------------------------|
| `<name>-a` | 10.77.0.0/24                  | 10.76.0.1/30    | 10.77.1.0/24 via 10.76.0.2 |
| `<name>-b` | 10.77.1.0/24                  | 10.76.0.2/30    | 10.77.0.0/24 via 10.76.0.1 |

Every address exists only inside the two namespaces; nothing is routed to the machine's own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from ops.lab import Lab, LabError, LabInfo, edge, link, netns

SUBNETS = ("10.77.0", "10.77.1")
WIRE = ("10.76.0.1", "10.76.0.2")
SUFFIXES = ("a", "b")

log = structlog.get_logger("lab")


@dataclass(frozen=True)
class StartCost:
    """What starting one host took: seconds, its daemons' memory (no guest yet), its disk (template copy)."""

    namespace: str
    seconds: float
    rss_mib: float
    disk_mib: float

    def describe(self) -> str:
        memory = f"daemons {self.rss_mib:.0f} MiB RSS"
        return f"{self.namespace}: {self.seconds:.1f} s, {memory}, disk {self.disk_mib:.0f} MiB"


def disk_mib(root: Path) -> float:
    """Space the files under `root` take (allocated blocks: qcow2 files are sparse)."""
    blocks = sum(path.lstat().st_blocks for path in root.rglob("*") if path.is_file() and not path.is_symlink())
    return blocks * 512 / 2**20


class TwoHostLab:
    """Two labs routed to each other over a veth pair; the first is where NATS and the balancer run."""

    def __init__(self, workdir: Path, name: str = "quicfleet-lab2", spread: bool = False) -> None:
        self.workdir = Path(workdir).resolve()
        self.name = name
        self.spread: edge.Spread | None = None
        self._wants_spread = spread
        self.hosts = tuple(
            Lab(self.workdir / suffix, f"{name}-{suffix}", subnet=subnet, routed=True)
            for suffix, subnet in zip(SUFFIXES, SUBNETS, strict=True)
        )
        self.costs: list[StartCost] = []
        self._started = False

    def end(self, index: int) -> link.End:
        return link.End(self.hosts[index].name, WIRE[index], SUBNETS[index])

    def wire_address(self, index: int) -> str:
        """The address of host `index` on the wire (the other host reaches it there)."""
        return WIRE[index]

    @property
    def infos(self) -> tuple[LabInfo, LabInfo]:
        first, second = self.hosts
        return first.info, second.info

    def start(self) -> tuple[LabInfo, LabInfo]:
        """Start both hosts and the wire (a second call returns the running pair); on failure, undo it all."""
        if self._started:
            return self.infos
        for lab in self.hosts:
            lab.ensure_free()  # both checked before anything starts: never tear down someone else's lab
        self.costs = []
        try:
            for lab in self.hosts:
                self.costs.append(self._start_host(lab))
            link.connect(self.end(0), self.end(1))
            if self._wants_spread:
                self.spread = edge.connect_spread([lab.name for lab in self.hosts], f"{self.name}-c")
        except BaseException:
            log.error("lab.pair_start_failed", name=self.name, workdir=str(self.workdir))
            self.stop()
            raise
        self._started = True
        log.info("lab.pair_started", name=self.name, costs=[cost.describe() for cost in self.costs])
        return self.infos

    def _start_host(self, lab: Lab) -> StartCost:
        began = time.monotonic()
        lab.start()
        seconds = time.monotonic() - began
        rss = netns.rss_kib(netns.pids(lab.name)) / 1024
        return StartCost(lab.name, seconds, rss, disk_mib(lab.workdir))

    def wrap(self, index: int, argv: list[str]) -> list[str]:
        """The command line that runs `argv` on host `index` (inside its namespace)."""
        return self.hosts[index].wrap(argv)

    def cut(self) -> None:
        """Take the second host's end of the wire down: its guests and its processes are cut off."""
        link.set_down(self.end(1))
        log.info("lab.wire_cut", namespace=self.hosts[1].name)

    def mend(self) -> None:
        """Bring the wire up again, routes included."""
        link.set_up(self.end(0), self.end(1))
        log.info("lab.wire_mended", namespace=self.hosts[1].name)

    def linked(self) -> bool:
        return all(link.is_up(self.end(index)) for index in range(2))

    def stop(self) -> None:
        """Stop both labs (the wire goes with their namespaces); never raises for what is already gone."""
        problems = []
        if self._wants_spread:
            netns.delete(f"{self.name}-c")
            self.spread = None
        for lab in reversed(self.hosts):
            try:
                lab.stop()
            except LabError as error:
                problems.append(str(error))
        self._started = False
        if problems:
            raise LabError("; ".join(problems))
