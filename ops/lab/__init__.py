"""A libvirt lab that stays on this machine: a network namespace holding its own libvirtd,
a DHCP network and the test template, so real VMs boot and serve without a packet leaving.

`quicfleet up` and the end-to-end tests use it the same way:

    lab = Lab(workdir)
    info = lab.start()                # template built on first use
    subprocess.Popen(lab.wrap(["python", "-m", "services.provisioner"]), env=...)
    ...
    lab.stop()                        # safe after a failure, and twice

Each lab records its owner (`ops.lab.owner`): a lab left behind by a process that died is
reclaimed by the next `start()` under its name, or by `reclaim_stale()`; a lab whose owner still
runs, or a namespace with no record, is refused and left alone. Two of them routed to each other
make the two-host lab (`ops.lab.twohost`). `Lab(workdir, edge=True)` is the lab of an `l4` balancer:
its guests' network forwards (mode `open`) and a client namespace on a wire reaches a VIP
(`ops.lab.edge`), while only the balancer's DNAT'ed flows reach the guests from there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import libvirt
import structlog

from ops.lab import daemons, edge, netns, network, owner, template
from ops.lab.netns import LabError
from ops.lab.network import SUBNET_PREFIX

__all__ = ["Lab", "LabError", "LabInfo", "lab_possible", "reclaim_stale"]

NEEDED_TOOLS = ("qemu-system-x86_64", "libvirtd", "virtlogd", "ip", "virsh")

log = structlog.get_logger("lab")


def lab_possible() -> tuple[bool, str]:
    """(True, "") when this machine can run the lab; otherwise (False, the reason)."""
    if os.geteuid() != 0:
        return False, "the lab needs root (network namespaces, libvirtd)"
    missing = [tool for tool in NEEDED_TOOLS if shutil.which(tool) is None]
    if missing:
        return False, f"missing {', '.join(missing)} (install the packages in deploy/apt/vm.txt)"
    return True, ""


@dataclass(frozen=True)
class LabInfo:
    """What a client of the lab needs: where libvirt is, the network and the template's name."""

    namespace: str
    libvirt_uri: str
    network: str
    template: str
    subnet: str = SUBNET_PREFIX
    """The network's /24 (`<subnet>.0/24`; the bridge is `<subnet>.1`)."""
    client_namespace: str | None = None
    """An edge lab's client namespace (`ops.lab.edge`): where clients of an `l4` balancer run."""
    vip: str | None = None
    """An edge lab's virtual address, on the lab's side of the wire: what an `l4` balancer serves."""


class Lab:
    """One namespace, one private libvirtd, one DHCP network, one template; all under `workdir`.

    `subnet` and `routed` are for labs that are routed to each other (`ops.lab.twohost`): each
    needs its own subnet, and a network whose guests have a gateway and no firewall rule. `edge`
    adds the client side of an `l4` balancer (`ops.lab.edge`; its network is routed too).
    """

    def __init__(
        self, workdir: Path, name: str = "quicfleet-lab", subnet: str = SUBNET_PREFIX, routed: bool = False,
        edge: bool = False,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.name = name
        self.subnet = subnet
        self.routed = routed or edge
        self.edge = edge
        self.paths = daemons.DaemonPaths(self.workdir / "libvirt")
        self._daemon: subprocess.Popen[bytes] | None = None
        self._info: LabInfo | None = None

    @property
    def info(self) -> LabInfo:
        side = edge.Edge(self.name) if self.edge else None
        return LabInfo(self.name, self.paths.uri, self.name, template.TEMPLATE_NAME, self.subnet,
                       side.namespace if side else None, side.vip if side else None)

    def start(self) -> LabInfo:
        """Bring the lab up (a second call returns the running lab); on failure, undo it all."""
        if self._info is not None:
            return self._info
        ok, why = lab_possible()
        if not ok:
            raise LabError(why)
        self.ensure_free()  # before the try: never tear down someone else's lab
        began = time.monotonic()
        try:
            self._start()
        except BaseException:
            log.error("lab.start_failed", namespace=self.name, workdir=str(self.workdir))
            self.stop()
            raise
        self._info = self.info
        seconds = round(time.monotonic() - began, 1)
        log.info("lab.started", namespace=self.name, uri=self._info.libvirt_uri, seconds=seconds)
        return self._info

    def ensure_free(self) -> None:
        """Make sure the namespace is free: reclaim a lab whose recorded owner died, refuse any other."""
        if not netns.exists(self.name):
            return
        found = owner.read(self.name)
        if found is None or found.alive():
            held = found.describe() if found is not None else "no owner record"
            raise LabError(
                f"network namespace {self.name} already exists ({held}): another lab runs under that name, or one"
                f" crashed (Lab(<its workdir>, {self.name!r}).stop() or `ip netns del {self.name}` cleans up)"
            )
        reclaim(found)

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        template.build()
        owner.claim(self.name, self.workdir)  # first: whatever exists from here on is reclaimable
        netns.create(self.name)
        self._daemon = daemons.start(self.name, self.paths)
        conn = libvirt.open(self.paths.uri)
        try:
            network.ensure_network(conn, self.name, self.subnet, self.routed)
        finally:
            conn.close()
        if self.edge:
            edge.connect(self.name)
        template.define(self.paths.uri, self.workdir, self.name)

    def restart_libvirtd(self) -> None:
        """Restart the lab's libvirtd (virtlogd and guests stay): how tests prove that clients reconnect."""
        self._daemon = daemons.restart_libvirtd(self.name, self.paths, self._daemon)
        log.info("lab.libvirtd_restarted", namespace=self.name)

    def stop_libvirtd(self) -> None:
        """Stop the lab's libvirtd alone (virtlogd, dnsmasq and guests keep running): a host whose daemon died."""
        daemons.stop_libvirtd(self.paths, self._daemon)
        self._daemon = None
        log.info("lab.libvirtd_stopped", namespace=self.name)

    def start_libvirtd(self) -> None:
        """Start the lab's libvirtd again after `stop_libvirtd` (it finds the running guests in its state dir)."""
        if self._daemon is not None and self._daemon.poll() is None:
            return
        self._daemon = daemons.start(self.name, self.paths, virtlogd=not daemons.virtlogd_running(self.paths))
        log.info("lab.libvirtd_started", namespace=self.name)

    def wrap(self, argv: list[str]) -> list[str]:
        """The command line that runs `argv` inside the lab's namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def wrap_client(self, argv: list[str]) -> list[str]:
        """The command line that runs `argv` in an edge lab's client namespace (where `l4` clients come from)."""
        if not self.edge:
            raise LabError(f"lab {self.name} has no client side: start it with Lab(..., edge=True)")
        return ["ip", "netns", "exec", edge.client_namespace(self.name), *argv]

    def stop(self) -> None:
        """Remove domains, volumes, pools, network, daemons and namespace; never raises for
        something already gone, so it is safe after a half-done start and when called twice."""
        problems = self._teardown_libvirt()
        daemons.stop(self.paths, self._daemon)
        self._daemon = None
        if self.edge:
            edge.remove(self.name)
        netns.delete(self.name)
        owner.release(self.name)
        self._info = None
        log.info("lab.stopped", namespace=self.name, problems=len(problems))
        if problems:
            raise LabError("lab teardown left: " + "; ".join(problems))

    def _teardown_libvirt(self) -> list[str]:
        if not self.paths.socket.exists():
            return []
        try:
            conn = libvirt.open(self.paths.uri)
        except libvirt.libvirtError:
            return []
        try:
            return network.teardown(conn)
        finally:
            conn.close()


def reclaim(found: owner.Owner) -> None:
    """Tear down a lab whose owner died, through its recorded workdir (teardown is the same as `stop()`'s).

    A workdir that is gone no longer holds sockets or pid files: the namespace's processes are
    still found by `ip netns pids` and ended with it.
    """
    log.warning("lab.reclaiming", namespace=found.namespace, owner=found.describe())
    Lab(found.workdir, found.namespace).stop()


def reclaim_stale(prefix: str = "") -> list[str]:
    """Reclaim every recorded lab (whose namespace starts with `prefix`) whose owner died; returns their
    namespaces. Labs in use, and namespaces with no record, are left alone."""
    reclaimed = []
    for found in owner.recorded():
        if found.alive() or not found.namespace.startswith(prefix):
            continue
        if netns.exists(found.namespace):
            reclaim(found)
            reclaimed.append(found.namespace)
        else:
            owner.release(found.namespace)
    return reclaimed
