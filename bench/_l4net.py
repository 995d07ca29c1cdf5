"""The namespaces of `bench l4`: a client, a host with a virtual address and a bridge, Caddy servers as VMs.

    client ns (h2load) ── veth c0|h0 ── host ns (VIP on h0, bridge br0, NATS, balancer) ── veth vmN|eth0 ── VM ns (N)

Each "VM" is Debian's Caddy serving HTTP/3 on 443 with the test template's own Caddyfile (its
`Alt-Svc` and `QUIC-Status` headers, `Server Address: <ip>:443`), one Go thread. The host routes
between the client and the VMs with no firewall of its own; "direct" means the client talks to a
VM's address through that plain routing, so the l4 figures differ from it by the NAT, conntrack
and the balancer alone.

Where the CPU goes: packets crossing a veth are processed in softirq on the CPU that RPS names for
the receiving end. The host-side ends (h0, vmN) steer to the host core, the client's and the VMs'
ends to the load core, so the host core's time in /proc/stat is the host's whole share (its
kernel forwarding, NAT, conntrack, and the balancer process pinned there) and nothing else of ours.
This module builds no second copy of the tests' topology (tests/support/l4net.py): the bench
imports nothing from tests/, and its VMs are Caddy, not aioquic.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench._shares import Share

CLIENT_NET = "10.79.0"
"""The client ↔ host link: client .2, host .1, the VIP .10."""
VM_NET = "10.80.0"
"""The VMs' bridge: host .1, VM i at .(10 + i)."""
VM_PORT = 443
NICE = ("nice", "-n", "-10")
"""Our measured processes' priority: other work on a shared machine takes little of their cores."""

CADDYFILE = """{{
\tadmin off
\tauto_https off
\tservers {{
\t\tprotocols h1 h2 h3
\t}}
}}
:{port} {{
\ttls {cert} {key}
\tmap {{http.request.proto}} {{quic_status}} {{
\t\tHTTP/3.0 quic
\t\tdefault ""
\t}}
\theader Alt-Svc "h3=\\":{port}\\"; ma=86400"
\theader QUIC-Status {{quic_status}}
\trespond "Server Address: {{env.SERVER_ADDR}}" 200
}}
"""
"""deploy/template/guest/Caddyfile with the port and certificate filled in (no identity header: no UUID here)."""


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """A short command; a failure names it and its stderr."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[:400]}")
    return done


def cpu_mask(cores: str) -> str:
    """The hex CPU mask of a comma-separated core list (for rps_cpus)."""
    return format(sum(1 << int(core) for core in cores.split(",")), "x")


@dataclass
class Vm:
    """One Caddy "VM": its namespace, address, host-side interface and process."""

    index: int
    netns: str
    ip: str
    host_iface: str
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{self.ip}:{VM_PORT}"

    def cpu_seconds(self) -> float:
        """User plus system CPU of the Caddy process so far (0 once it is gone)."""
        assert self.process is not None
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class BenchNet:
    """The topology as a context manager; `host_core` and `load_core` drive the RPS steering above."""

    vip = f"{CLIENT_NET}.10"
    client_ip = f"{CLIENT_NET}.2"
    host_ip = f"{CLIENT_NET}.1"
    gateway = f"{VM_NET}.1"
    bridge = "br0"
    client_iface = "h0"
    """The host's client-facing interface (where the VIP lives)."""

    def __init__(self, work: Path, vms: int, host_core: str, load_core: str) -> None:
        token = secrets.token_hex(3)
        self.work = work
        self.host_core, self.load_core = host_core, load_core
        self.client_ns, self.host_ns = f"qfb-{token}-c", f"qfb-{token}-h"
        self._vm_prefix = f"qfb-{token}-v"
        self._count = vms
        self.vms: list[Vm] = []
        self._namespaces: list[str] = []

    def __enter__(self) -> BenchNet:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def wrap(self, ns: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def _netns(self, name: str) -> None:
        run(["ip", "netns", "add", name])
        self._namespaces.append(name)
        run(["ip", "-n", name, "link", "set", "lo", "up"])

    def _steer(self, ns: str, iface: str, cores: str) -> None:
        """Process what `iface` receives on `cores` (RPS); `ip netns exec` mounts that namespace's /sys."""
        path = f"/sys/class/net/{iface}/queues/rx-0/rps_cpus"
        run(self.wrap(ns, ["sh", "-c", f"echo {cpu_mask(cores)} > {path}"]))

    def _setup(self) -> None:
        host, client = self.host_ns, self.client_ns
        self._netns(client)
        self._netns(host)
        run(["ip", "-n", host, "link", "add", self.client_iface, "type", "veth", "peer", "name", "c0", "netns", client])
        run(["ip", "-n", client, "addr", "add", f"{self.client_ip}/24", "dev", "c0"])
        run(["ip", "-n", client, "link", "set", "c0", "up"])
        run(["ip", "-n", client, "route", "add", "default", "via", self.host_ip])
        run(["ip", "-n", host, "addr", "add", f"{self.host_ip}/24", "dev", self.client_iface])
        run(["ip", "-n", host, "addr", "add", f"{self.vip}/32", "dev", self.client_iface])
        run(["ip", "-n", host, "link", "set", self.client_iface, "up"])
        run(["ip", "-n", host, "link", "add", self.bridge, "type", "bridge"])
        run(["ip", "-n", host, "addr", "add", f"{self.gateway}/24", "dev", self.bridge])
        run(["ip", "-n", host, "link", "set", self.bridge, "up"])
        run(self.wrap(host, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]))
        self._steer(host, self.client_iface, self.host_core)
        self._steer(client, "c0", self.load_core)
        for index in range(self._count):
            self.vms.append(self._add_vm(index))
        for vm in self.vms:
            self._wait_listening(vm)

    def _add_vm(self, index: int) -> Vm:
        vm = Vm(index, f"{self._vm_prefix}{index}", f"{VM_NET}.{10 + index}", f"vm{index}")
        self._netns(vm.netns)
        run(["ip", "-n", self.host_ns, "link", "add", vm.host_iface, "type", "veth",
             "peer", "name", "eth0", "netns", vm.netns])
        run(["ip", "-n", self.host_ns, "link", "set", vm.host_iface, "master", self.bridge, "up"])
        run(["ip", "-n", vm.netns, "addr", "add", f"{vm.ip}/24", "dev", "eth0"])
        run(["ip", "-n", vm.netns, "link", "set", "eth0", "up"])
        run(["ip", "-n", vm.netns, "route", "add", "default", "via", self.gateway])
        self._steer(self.host_ns, vm.host_iface, self.host_core)
        self._steer(vm.netns, "eth0", self.load_core)
        vm.process = self._caddy(vm)
        return vm

    def _caddy(self, vm: Vm) -> subprocess.Popen[bytes]:
        from shared.certs import ensure_dev_certificate

        cert, key = ensure_dev_certificate(self.work)
        home = self.work / f"caddy-vm{vm.index}"
        home.mkdir(exist_ok=True)
        config = home / "Caddyfile"
        config.write_text(CADDYFILE.format(port=VM_PORT, cert=cert, key=key))
        env = os.environ | {"GOMAXPROCS": "1", "XDG_DATA_HOME": str(home), "XDG_CONFIG_HOME": str(home),
                            "HOME": str(home), "SERVER_ADDR": vm.address}
        argv = self.wrap(vm.netns, [*NICE, "taskset", "-c", self.load_core.split(",")[0], "caddy", "run", "--config",
                                    str(config), "--adapter", "caddyfile"])
        with open(home / "caddy.log", "wb") as log:
            return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

    def _wait_listening(self, vm: Vm, timeout_s: float = 30.0) -> None:
        """Until Caddy has its UDP socket on 443 (then it answers HTTP/3)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out = run(self.wrap(vm.netns, ["ss", "-Hunl", f"sport = :{VM_PORT}"]), check=False).stdout
            if out.strip():
                return
            assert vm.process is not None
            if vm.process.poll() is not None:
                break
            time.sleep(0.2)  # a start-up poll of a benchmark, not a test's wait
        raise RuntimeError(f"Caddy in {vm.netns} did not listen; see {self.work}/caddy-vm{vm.index}/caddy.log")

    def vm_shares(self, before: list[float], wall_s: float) -> list[Share]:
        """Each VM's CPU share since `before` (from `vm_cpu()`)."""
        return [Share(f"caddy vm{vm.index}", vm.cpu_seconds() - used, wall_s, self.load_core.split(",")[0])
                for vm, used in zip(self.vms, before, strict=True)]

    def vm_cpu(self) -> list[float]:
        return [vm.cpu_seconds() for vm in self.vms]

    def close(self) -> None:
        """Stop the VMs, delete every namespace made here (whatever still runs inside is killed first)."""
        for vm in self.vms:
            if vm.process is not None and vm.process.poll() is None:
                vm.process.terminate()
                try:
                    vm.process.wait(10)
                except subprocess.TimeoutExpired:
                    vm.process.kill()
                    vm.process.wait()
        for name in reversed(self._namespaces):
            for pid in run(["ip", "netns", "pids", name], check=False).stdout.split():
                run(["kill", "-9", pid], check=False)
            run(["ip", "netns", "del", name], check=False)
        self._namespaces.clear()
