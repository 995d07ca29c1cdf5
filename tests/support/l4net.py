"""A namespace topology for the L4 passthrough tests and bench: client → host (VIP, bridge) → VMs.

    client netns ── veth ── host netns (VIP on its client side, bridge `br0`) ── veth ── VM netns (N of them)

Each VM runs a real HTTP/3 server (tests/support/h3server.py, aioquic) as a subprocess inside its
namespace, answering `Server Address: <vm ip>:<port>`, so a test sees which VM served a connection.
The host namespace forwards between the client and the VMs and has no firewall of its own: what
the balancer's nftables table adds is the only thing steering traffic. Namespace names are unique
per instance (interfaces live only inside the namespaces, so their names are fixed); everything
is deleted on exit, processes first.

    with L4Net(vms=2) as net:
        net.run_in(net.host_ns, ["nft", "list", "tables"])
        vm = net.add_vm()            # a third VM, serving at once
        net.remove_vm(vm)

`python -m tests.support.l4net serve --host IP --port P --workdir D` is the VM server's entry point.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import select
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parents[2]
CLIENT_NET = "10.77.0"
"""The client ↔ host link: client .2, host .1, the VIP .10 (all /24)."""
VM_NET = "10.78.0"
"""The VMs' bridge: host .1, VM i at .(10 + i) (all /24)."""
VM_PORT = 8443
READY_TIMEOUT_S = 20.0


def _run(
    argv: list[str], check: bool = True, timeout: float = 60, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a short command (`input_text` on its stdin); on failure the error names it and its stderr."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, input=input_text)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[:400]}")
    return done


@dataclass
class Vm:
    """One VM: its namespace, address and HTTP/3 port, the host-side interface on the bridge."""

    index: int
    netns: str
    ip: str
    port: int
    host_iface: str
    process: subprocess.Popen[str] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        """`ip:port`, as the VM's answers name it (`Server Address: <address>`)."""
        return f"{self.ip}:{self.port}"


class L4Net:
    """The topology as a context manager (sync: setup is a few `ip` commands). See the module doc."""

    client_iface = "c0"
    """The client namespace's interface toward the host."""
    host_client_iface = "h0"
    """The host's interface toward the client (the client-facing side, where the VIP lives)."""
    bridge = "br0"
    """The host's bridge of the VMs (the VM-facing side)."""
    vm_iface = "eth0"
    """Each VM's interface (inside its namespace)."""
    client_ip = f"{CLIENT_NET}.2"
    host_ip = f"{CLIENT_NET}.1"
    vip = f"{CLIENT_NET}.10"
    gateway = f"{VM_NET}.1"
    vm_network = f"{VM_NET}.0/24"

    def __init__(self, vms: int = 1, port: int = VM_PORT, prefix: str = "qfl4") -> None:
        token = secrets.token_hex(3)
        self.port = port
        self.client_ns = f"{prefix}-{token}-c"
        self.host_ns = f"{prefix}-{token}-h"
        self._vm_prefix = f"{prefix}-{token}-v"
        self._initial = vms
        self._next_index = 0
        self.vms: list[Vm] = []
        self._workdir = Path(tempfile.mkdtemp(prefix=f"{prefix}-{token}-"))
        self._namespaces: list[str] = []

    # --- running things inside ---------------------------------------------------------------

    @staticmethod
    def argv_in(ns: str, argv: list[str]) -> list[str]:
        """`argv` prefixed to run inside namespace `ns`."""
        return ["ip", "netns", "exec", ns, *argv]

    def run_in(
        self, ns: str, argv: list[str], check: bool = True, timeout: float = 60, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a short command inside namespace `ns` (text output captured; `input_text` fed to stdin)."""
        return _run(self.argv_in(ns, argv), check=check, timeout=timeout, input_text=input_text)

    def popen_in(self, ns: str, argv: list[str], **kwargs: object) -> subprocess.Popen[str]:
        """Start a long-lived process inside `ns` (from the repo root, so `-m tests...` imports work)."""
        process: subprocess.Popen[str] = subprocess.Popen(  # type: ignore[call-overload]
            self.argv_in(ns, argv), cwd=REPO, text=True, **kwargs
        )
        return process

    async def exec_in(self, ns: str, argv: list[str], **kwargs: object) -> asyncio.subprocess.Process:
        """The asyncio form of `popen_in` (pipes as the caller asks)."""
        return await asyncio.create_subprocess_exec(*self.argv_in(ns, argv), cwd=REPO, **kwargs)  # type: ignore[arg-type]

    def python_in(self, ns: str) -> list[str]:
        """The argv prefix of this interpreter inside `ns` (e.g. `+ ["-m", "tests.support.l4client"]`)."""
        return self.argv_in(ns, [sys.executable])

    # --- setup and teardown ----------------------------------------------------------------------

    def __enter__(self) -> L4Net:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _netns(self, name: str) -> None:
        _run(["ip", "netns", "add", name])
        self._namespaces.append(name)
        _run(["ip", "-n", name, "link", "set", "lo", "up"])

    def _setup(self) -> None:
        self._netns(self.client_ns)
        self._netns(self.host_ns)
        host, client = self.host_ns, self.client_ns
        _run(["ip", "-n", host, "link", "add", self.host_client_iface, "type", "veth",
              "peer", "name", self.client_iface, "netns", client])
        _run(["ip", "-n", client, "addr", "add", f"{self.client_ip}/24", "dev", self.client_iface])
        _run(["ip", "-n", client, "link", "set", self.client_iface, "up"])
        _run(["ip", "-n", host, "addr", "add", f"{self.host_ip}/24", "dev", self.host_client_iface])
        _run(["ip", "-n", host, "addr", "add", f"{self.vip}/32", "dev", self.host_client_iface])
        _run(["ip", "-n", host, "link", "set", self.host_client_iface, "up"])
        _run(["ip", "-n", host, "link", "add", self.bridge, "type", "bridge"])
        _run(["ip", "-n", host, "addr", "add", f"{self.gateway}/24", "dev", self.bridge])
        _run(["ip", "-n", host, "link", "set", self.bridge, "up"])
        _run(["ip", "-n", client, "route", "add", "default", "via", self.host_ip])
        self.run_in(host, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        for _ in range(self._initial):
            self.add_vm()

    def add_vm(self) -> Vm:
        """A new VM on the bridge with its HTTP/3 server answering (returns once it listens)."""
        index = self._next_index
        self._next_index += 1
        vm = Vm(index, f"{self._vm_prefix}{index}", f"{VM_NET}.{10 + index}", self.port, f"vm{index}")
        self._netns(vm.netns)
        _run(["ip", "-n", self.host_ns, "link", "add", vm.host_iface, "type", "veth",
              "peer", "name", self.vm_iface, "netns", vm.netns])
        _run(["ip", "-n", self.host_ns, "link", "set", vm.host_iface, "master", self.bridge, "up"])
        _run(["ip", "-n", vm.netns, "addr", "add", f"{vm.ip}/24", "dev", self.vm_iface])
        _run(["ip", "-n", vm.netns, "link", "set", self.vm_iface, "up"])
        _run(["ip", "-n", vm.netns, "route", "add", "default", "via", self.gateway])
        self.vms.append(vm)
        vm.process = self._serve(vm)
        return vm

    def _serve(self, vm: Vm) -> subprocess.Popen[str]:
        workdir = self._workdir / f"vm{vm.index}"
        workdir.mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "tests.support.l4net", "serve", "--host", vm.ip, "--port", str(vm.port),
                "--workdir", str(workdir)]
        process = self.popen_in(vm.netns, argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        _wait_ready(process, vm)
        return process

    def remove_vm(self, vm: Vm) -> None:
        """Stop the VM's server and delete its namespace and link (a VM that died or was removed)."""
        self._stop(vm)
        _run(["ip", "-n", self.host_ns, "link", "del", vm.host_iface], check=False)
        self._delete_ns(vm.netns)
        self.vms.remove(vm)

    def _stop(self, vm: Vm) -> None:
        if vm.process is None:
            return
        vm.process.terminate()
        try:
            vm.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            vm.process.kill()
            vm.process.wait(timeout=5)
        if vm.process.stdout is not None:
            vm.process.stdout.close()
        vm.process = None

    def _delete_ns(self, name: str) -> None:
        pids = _run(["ip", "netns", "pids", name], check=False).stdout.split()
        for pid in pids:
            _run(["kill", "-9", pid], check=False)
        _run(["ip", "netns", "del", name], check=False)
        if name in self._namespaces:
            self._namespaces.remove(name)

    def close(self) -> None:
        """Stop every server and delete every namespace this instance made (safe to call twice)."""
        for vm in list(self.vms):
            self._stop(vm)
        self.vms.clear()
        for name in reversed(list(self._namespaces)):
            self._delete_ns(name)
        subprocess.run(["rm", "-rf", str(self._workdir)], check=False)


def _wait_ready(process: subprocess.Popen[str], vm: Vm) -> None:
    """Block until the server prints `ready` (it listens), or fail with a deadline."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], READY_TIMEOUT_S)
    line = process.stdout.readline() if ready else ""
    if not line.startswith("ready"):
        process.kill()
        raise RuntimeError(f"the HTTP/3 server of {vm.netns} did not start: {line!r} (exit {process.poll()})")


async def _serve_forever(host: str, port: int, workdir: Path) -> None:
    from tests.support.h3server import H3Backend

    async with H3Backend(workdir, host=host, port=port):
        print("ready", flush=True)
        await asyncio.Event().wait()


def main() -> int:
    """The VM server: `serve --host IP --port P --workdir D` (prints `ready` once it listens)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["serve"])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(args.host, args.port, args.workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
