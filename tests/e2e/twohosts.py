"""The stack over two hypervisor hosts: NATS, metrics, scaler, balancer and host `lab-a`'s
provisioner in the first namespace, host `lab-b`'s provisioner in the second.

NATS listens on every address of the first namespace (which holds nothing but the lab): the
services beside it use 127.0.0.1, the second host's provisioner the first host's wire address,
which it reaches over the veth pair. Cutting the wire therefore cuts only the second host off.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import libvirt

from ops.lab import netns
from ops.lab.twohost import TwoHostLab
from ops.natsserver import NatsServer
from shared.bus import Bus
from shared.contract.events import VmState
from shared.contract.provisioning import ListVms, VmList
from shared.errors import BusError
from tests.e2e.fleetwatch import FleetWatch
from tests.e2e.stack import REPO, SERVICES, Stack
from tests.support import wait_until

HOSTS = ("lab-a", "lab-b")
SECOND = "provisioner-b"
"""The second host's provisioner, by its name among the stack's processes and logs."""


class TwoHostStack(Stack):
    """nats-server and the four services on the first host, one more provisioner on the second."""

    def __init__(self, pair: TwoHostLab, workdir: Path) -> None:
        super().__init__(pair.hosts[0], workdir)
        self.pair = pair
        self.stopped: dict[str, int] = {}
        """Processes a test stopped on purpose (a lost host), with their exit codes."""

    @property
    def nats_port(self) -> int:
        assert self.nats is not None
        return self.nats.port

    def env(self) -> dict[str, str]:
        """The first host's services: NATS on loopback, host `lab-a`."""
        return super().env() | {"QUICFLEET_NATS_URL": f"nats://127.0.0.1:{self.nats_port}", "QUICFLEET_HOST": HOSTS[0]}

    def second_env(self) -> dict[str, str]:
        """The second host's provisioner: its own libvirt, network and name; NATS over the wire."""
        info = self.pair.hosts[1].info
        return self.env() | {
            "QUICFLEET_NATS_URL": f"nats://{self.pair.wire_address(0)}:{self.nats_port}",
            "QUICFLEET_LIBVIRT_URI": info.libvirt_uri,
            "QUICFLEET_NETWORK": info.network,
            "QUICFLEET_TEMPLATE": info.template,
            "QUICFLEET_HOST": HOSTS[1],
        }

    def start(self) -> None:
        """Start nats-server on every address of the first namespace, the services, then the second provisioner."""
        (self.workdir / "nats").mkdir(parents=True, exist_ok=True)
        with netns.entered(self.lab.name):
            self.nats = NatsServer(self.workdir / "nats", host="0.0.0.0")
            self.nats.start()
        env = self.env()
        for service in SERVICES:
            self.processes[service] = self._spawn(service, env)
        self.start_second_provisioner()

    def start_second_provisioner(self) -> None:
        """(Re)start the provisioner of host `lab-b`, inside the second namespace."""
        self.stopped.pop(SECOND, None)
        with self.log(SECOND).open("ab") as log:
            self.processes[SECOND] = subprocess.Popen(
                self.pair.wrap(1, [sys.executable, "-m", "services.provisioner"]),
                cwd=REPO,
                env=self.second_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill_second_provisioner(self) -> None:
        """SIGKILL the second host's provisioner, as a host that died would lose it (no goodbye)."""
        process = self.processes.pop(SECOND)
        process.send_signal(signal.SIGKILL)
        self.stopped[SECOND] = process.wait(timeout=30)


async def hosts_answer(bus: Bus, hosts: tuple[str, ...] = HOSTS, timeout: float = 180.0) -> None:
    """Wait until a provisioner on every one of `hosts` answers the fleet listing."""

    async def answering() -> bool:
        try:
            lists = await bus.gather(bus.subjects.prov_list, ListVms(), VmList, window=1.0)
        except BusError:
            await asyncio.sleep(0.5)
            return False
        return set(hosts) <= {listing.host for listing in lists}

    await wait_until(answering, timeout, interval=0.5, what=f"provisioners of {', '.join(hosts)} answering")


def ready_on(watch: FleetWatch, host: str) -> dict[str, str]:
    """VM name -> address of the VMs whose latest event says ready on `host`."""
    return {vm: e.address for vm, e in watch.latest.items()
            if e.state is VmState.READY and e.host == host and e.address}


def host_of(watch: FleetWatch, vm: str) -> str | None:
    """The host the VM's events name (the last one that names any)."""
    return next((e.host for e in reversed(watch.history) if e.vm == vm and e.host), None)


def clones(uri: str, template: str) -> tuple[set[str], set[str]]:
    """The domains and volumes a host's libvirt holds besides the template's own."""
    conn = libvirt.open(uri)
    try:
        domains = {d.name() for d in conn.listAllDomains()} - {template}
        volumes = {v.name() for p in conn.listAllStoragePools() for v in p.listAllVolumes()} - {f"{template}.qcow2"}
    finally:
        conn.close()
    return domains, volumes
