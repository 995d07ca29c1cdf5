"""`quicfleet up` / `make run`: NATS with JetStream and the four services, logs merged, one Ctrl-C.

Children run in their own sessions, so the terminal's Ctrl-C reaches only this supervisor,
which then stops them in order: SIGTERM to the services (they drain), wait, then NATS last.
Each child also gets SIGTERM from the kernel if this process dies (PR_SET_PDEATHSIG, set in
`ops.stack.child`), so not even a `kill -9` of `up` leaves a process behind. A service that exits
on its own is started again after a backoff (`ops.stack.restarts`), as compose's
`restart: unless-stopped` would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.console import Console

from ops.cli.health import SERVICES
from ops.natsauth import Auth
from ops.natsserver import fixed_node_ports, nats_server_binary, write_config, write_node_config
from ops.stack.child import Child, spawn
from ops.stack.natsusers import cli_env, close_users, open_users
from ops.stack.plan import (
    TEST_URI,
    Mode,
    Plan,
    choose_mode,
    hints,
    l4_lab_env,
    lab_env,
    nats_children,
    service_argv,
    wants_l4,
)
from ops.stack.plan import service_env as make_service_env
from ops.stack.restarts import Restarts, restarted
from ops.stack.say import say
from ops.stack.watch import watch_children

SERVICE_GRACE_S = 20.0
JETSTREAM_WAIT_S = 30.0
Wrap = Callable[[list[str]], list[str]]


@dataclass(frozen=True)
class StackOptions:
    workdir: Path
    nats_port: int = 4222
    nats_cluster: int = 1
    """1: one nats-server (`nats`); N: a cluster of N nodes (`nats-1` ...) on nats_port, nats_port + 1 ..."""
    lab: bool = True
    lab_name: str = "quicfleet-lab"
    ready_timeout_s: float = 90.0
    nats_auth: bool = True
    """One NATS user per service and one for the CLI (ops.natsauth); off: anyone on loopback may do anything."""


class Stack:
    """NATS (one server or a cluster) plus the four services, started in order and stopped in reverse."""

    def __init__(self, options: StackOptions, plan: Plan, wrap: Wrap, console: Console) -> None:
        self.options = options
        self.plan = plan
        self.wrap = wrap
        self.console = console
        self.nats: dict[str, Child] = {}
        self.services: dict[str, Child] = {}
        self.restarts: dict[str, Restarts] = {}
        self.ports = fixed_node_ports(options.nats_port, options.nats_cluster) if options.nats_cluster > 1 else []
        self.clients = [node.client for node in self.ports] or [options.nats_port]
        self.nats_url = ",".join(f"nats://127.0.0.1:{port}" for port in self.clients)
        self.auth: Auth | None = None

    @property
    def nats_dir(self) -> Path:
        """One store per mode and cluster size: a desired size set against the test driver must not
        carry into a run on real VMs (or the other way round), and a single server's store is not a
        cluster node's."""
        size = self.options.nats_cluster
        suffix = "" if size == 1 else f"-cluster{size}"
        return self.options.workdir / f"nats-{self.plan.mode.value}{suffix}"

    async def start_nats(self) -> None:
        """Start every nats-server; a cluster is ready once its nodes agree on a JetStream meta leader."""
        mode = self.plan.mode.value
        say(self.console, f"NATS state (desired size, policy) in {self.nats_dir}: one store per mode, this is {mode}")
        self.auth = open_users(self.options.workdir, self.options.nats_auth, self.clients, self.console)
        for name in nats_children(self.options.nats_cluster):
            await self.start_nats_node(name)
        if self.options.nats_cluster > 1:
            await self._wait_jetstream(JETSTREAM_WAIT_S)
            say(self.console, f"NATS cluster of {self.options.nats_cluster} nodes at {self.nats_url}: JetStream "
                              f"keeps {self.options.nats_cluster} copies of every bucket")

    async def start_nats_node(self, name: str) -> None:
        """Start (or start again) one nats-server, with the same ports and store as before."""
        config = self._nats_config(nats_children(self.options.nats_cluster).index(name))
        argv = self.wrap([nats_server_binary(), "-c", str(config)])
        child = self.nats[name] = await spawn(name, argv, dict(os.environ) | {"GOMAXPROCS": "2"}, self.console)
        waiters = [asyncio.create_task(child.ready.wait()), asyncio.create_task(child.process.wait())]
        await asyncio.wait(waiters, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        self.restarts[name] = restarted(self.restarts.get(name, Restarts()), asyncio.get_running_loop().time())
        if not child.ready.is_set():
            raise RuntimeError(f"nats-server {name} did not start (see its lines above; config {config})")

    def login(self, role: str) -> dict[str, str] | None:
        """The variables that log `role` in, or None with authorisation off."""
        return self.auth.env(role) if self.auth is not None else None

    def _nats_config(self, index: int) -> Path:
        block = self.auth.server_block if self.auth is not None else ""
        if self.options.nats_cluster == 1:
            (self.nats_dir / "jetstream").mkdir(parents=True, exist_ok=True)
            return write_config(self.nats_dir / "nats.conf", self.options.nats_port, self.nats_dir / "jetstream",
                                extra=block)
        route = self.auth.route_secret if self.auth is not None else None
        return write_node_config(self.nats_dir / f"node{index + 1}", index, self.ports, auth=block, route_secret=route)

    async def _wait_jetstream(self, timeout: float) -> None:
        """Until JetStream answers through the cluster (its nodes have elected a meta leader): a service
        started before would find its bucket unreachable. Asked with `quicfleet health nats`, which runs
        inside the lab's namespace like the nodes do."""
        if not await self._poll_cli(["health", "nats"], timeout):
            raise RuntimeError(f"the NATS cluster's JetStream did not answer within {timeout:g} s (no meta leader)")

    async def start_services(self) -> None:
        for name in SERVICES:
            await self.start_service(name)

    async def start_service(self, name: str) -> None:
        """Start (or start again) one service, with the environment the plan gives it."""
        env = make_service_env(os.environ, name, self.nats_url, self.plan, sys.stdout.isatty(),
                               self.options.nats_cluster, self.login(name))
        self.services[name] = await spawn(name, self.wrap(service_argv(sys.executable, name)), env, self.console)
        now = asyncio.get_running_loop().time()
        self.restarts[name] = restarted(self.restarts.get(name, Restarts()), now)

    async def wait_healthy(self) -> bool:
        """Poll `quicfleet health` (inside the lab when there is one) until every service answers."""
        return await self._poll_cli(["health", "--window", "3"], self.options.ready_timeout_s)

    async def _poll_cli(self, args: list[str], timeout: float) -> bool:
        """Run `quicfleet <args>` against this stack's NATS every second until it exits 0 or `timeout` passes."""
        argv = self.wrap([sys.executable, "-m", "ops.cli", "--nats-url", self.nats_url, "--timeout", "3", *args])
        env = cli_env(self.auth)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            check = await asyncio.create_subprocess_exec(
                *argv, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            if await check.wait() == 0:
                return True
            await asyncio.sleep(1)
        return False

    async def stop(self) -> None:
        say(self.console, "stopping the services (SIGTERM), then NATS")
        await asyncio.gather(*(child.stop(SERVICE_GRACE_S) for child in self.services.values()))
        await asyncio.gather(*(child.stop(10.0) for child in self.nats.values()))
        close_users(self.auth, self.clients)
        say(self.console, "stopped; no process left behind")

    def crashed(self) -> list[str]:
        return [name for name, child in self.services.items() if not child.running]


async def supervise(stack: Stack) -> int:
    """Run until SIGINT/SIGTERM; restart services and NATS that exit on their own."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    code = 0
    try:
        code = await _run(stack, stop)
    except (RuntimeError, OSError) as error:
        say(stack.console, f"could not start: {error}", "bold red")
        code = 1
    finally:
        await stack.stop()
    return code


async def _run(stack: Stack, stop: asyncio.Event) -> int:
    await stack.start_nats()
    await stack.start_services()
    if await stack.wait_healthy():
        for line in hints(stack.plan, str(Path(sys.executable).parent), stack.nats_url, os.environ):
            say(stack.console, line, "bold yellow" if line.startswith("WARNING") else "bold")
    else:
        say(stack.console, "not every service answered $SRV.PING in time; see the lines above", "bold red")
    return await watch_children(stack, stop)


def _load_lab() -> ModuleType | None:
    """`ops.lab` when it is importable (it needs libvirt-python), else None."""
    try:
        import importlib

        return importlib.import_module("ops.lab")
    except ImportError:
        return None


def _plan(options: StackOptions, lab_module: ModuleType | None) -> tuple[Plan, Any]:
    """Decide the mode and, for the lab, start it (it builds the template on first use)."""
    lab_ok = lab_module.lab_possible() if lab_module else (False, "ops.lab is not available")
    mode, warning = choose_mode(os.environ, options.lab, lab_ok)
    if mode is Mode.LIBVIRT:
        return Plan(mode), None
    if mode is Mode.TEST:
        return Plan(mode, {"QUICFLEET_LIBVIRT_URI": TEST_URI}, warning=warning), None
    assert lab_module is not None
    edge = wants_l4(os.environ)  # an l4 balancer's clients come from the lab's client side
    lab = lab_module.Lab(options.workdir / "lab", name=options.lab_name, edge=edge)
    try:
        info = lab.start()
    except (RuntimeError, OSError, subprocess.SubprocessError, lab_module.libvirt.libvirtError) as error:
        raise LabFailed(f"the lab did not start: {error}; `quicfleet up --no-lab` runs without it") from None
    balancer = l4_lab_env(info.vip, info.subnet) if edge and info.vip else {}
    return Plan(mode, lab_env(info.libvirt_uri, info.network, info.template), namespace=info.namespace,
                balancer_env=balancer, client_namespace=info.client_namespace), lab


class LabFailed(Exception):
    """The lab could not start (it has undone itself); `up` reports it in one line."""


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def run_stack(options: StackOptions, console: Console | None = None) -> int:
    """The whole `up`: plan (maybe start the lab), run the stack until a signal, tear down."""
    console = console or Console(highlight=False)
    options.workdir.mkdir(parents=True, exist_ok=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    lab: Any = None
    try:
        say(console, "starting quicfleet (the first lab start builds the VM template)")
        plan, lab = _plan(options, _load_lab() if options.lab else None)
        if plan.warning:
            say(console, f"WARNING: {plan.warning}", "bold yellow")
        wrap: Wrap = lab.wrap if lab is not None else (lambda argv: argv)
        return asyncio.run(supervise(Stack(options, plan, wrap, console)))
    except KeyboardInterrupt:
        return 130
    except LabFailed as error:
        say(console, str(error), "bold red")
        return 1
    finally:
        if lab is not None:
            _teardown(lab, console)
        signal.signal(signal.SIGTERM, previous)


def _teardown(lab: Any, console: Console) -> None:
    """Stop the lab with Ctrl-C and SIGTERM ignored: a half torn-down lab is worse than a wait."""
    say(console, "tearing the lab down")
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        lab.stop()
    except (RuntimeError, OSError) as error:
        say(console, f"lab teardown: {error}", "bold red")
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
