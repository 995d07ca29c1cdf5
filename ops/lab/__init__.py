"""A libvirt lab that stays on this machine: a network namespace holding its own libvirtd,
a DHCP network and the test template, so real VMs boot and serve without a packet leaving.

`quicfleet up` and the end-to-end tests use it the same way:

    lab = Lab(workdir)
    info = lab.start()                # template built on first use
    subprocess.Popen(lab.wrap(["python", "-m", "services.provisioner"]), env=...)
    ...
    lab.stop()                        # safe after a failure, and twice
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

from ops.lab import daemons, netns, network, template
from ops.lab.netns import LabError

__all__ = ["Lab", "LabError", "LabInfo", "lab_possible"]

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


class Lab:
    """One namespace, one private libvirtd, one DHCP network, one template; all under `workdir`."""

    def __init__(self, workdir: Path, name: str = "quicfleet-lab") -> None:
        self.workdir = Path(workdir).resolve()
        self.name = name
        self.paths = daemons.DaemonPaths(self.workdir / "libvirt")
        self._daemon: subprocess.Popen[bytes] | None = None
        self._info: LabInfo | None = None

    @property
    def info(self) -> LabInfo:
        return LabInfo(self.name, self.paths.uri, self.name, template.TEMPLATE_NAME)

    def start(self) -> LabInfo:
        """Bring the lab up (a second call returns the running lab); on failure, undo it all."""
        if self._info is not None:
            return self._info
        ok, why = lab_possible()
        if not ok:
            raise LabError(why)
        if netns.exists(self.name):  # checked before the try: never tear down someone else's lab
            raise LabError(
                f"network namespace {self.name} already exists: another lab runs under that name, or one"
                f" crashed (Lab(<its workdir>, {self.name!r}).stop() or `ip netns del {self.name}` cleans up)"
            )
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

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        template.build()
        netns.create(self.name)
        self._daemon = daemons.start(self.name, self.paths)
        conn = libvirt.open(self.paths.uri)
        try:
            network.ensure_network(conn, self.name)
        finally:
            conn.close()
        template.define(self.paths.uri, self.workdir, self.name)

    def restart_libvirtd(self) -> None:
        """Restart the lab's libvirtd (virtlogd and guests stay): how tests prove that clients reconnect."""
        self._daemon = daemons.restart_libvirtd(self.name, self.paths, self._daemon)
        log.info("lab.libvirtd_restarted", namespace=self.name)

    def wrap(self, argv: list[str]) -> list[str]:
        """The command line that runs `argv` inside the lab's namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def stop(self) -> None:
        """Remove domains, volumes, pools, network, daemons and namespace; never raises for
        something already gone, so it is safe after a half-done start and when called twice."""
        problems = self._teardown_libvirt()
        daemons.stop(self.paths, self._daemon)
        self._daemon = None
        netns.delete(self.name)
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
