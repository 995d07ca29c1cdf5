"""What `quicfleet up` does while it runs: restart a service, or a nats-server, that exits on its own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, MutableMapping
from typing import Protocol

from rich.console import Console

from ops.stack.restarts import BAD_SETTING_EXIT, Restarts, next_restart
from ops.stack.say import say


class Process(Protocol):
    @property
    def returncode(self) -> int | None: ...


class Child(Protocol):
    @property
    def running(self) -> bool: ...

    @property
    def process(self) -> Process: ...


class Stack(Protocol):
    """What the watch needs of the supervisor's stack (`supervisor.Stack` is the one)."""

    console: Console

    @property
    def restarts(self) -> MutableMapping[str, Restarts]: ...

    @property
    def nats(self) -> Mapping[str, Child]: ...

    @property
    def services(self) -> Mapping[str, Child]: ...

    def crashed(self) -> list[str]: ...

    async def start_service(self, name: str) -> None: ...

    async def start_nats_node(self, name: str) -> None: ...


async def watch_children(stack: Stack, stop: asyncio.Event) -> int:
    """Until `stop`: restart a service, or a nats-server, that exits on its own (after a backoff).

    NATS going away must not take the fleet with it: the services reconnect without limit and the
    balancers keep serving from what they know, so each nats-server (the one, or each cluster node
    on its own) is restarted like any child; its JetStream store on disk keeps desired size, policy
    and lease, and a cluster node catches up from the others.
    """
    due: dict[str, float] = {}
    down: set[str] = set()
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await stop.wait()
        if stop.is_set():
            break
        for name in sorted(set(stack.crashed()) - set(due) - down):
            _schedule(stack, name, loop.time(), due, down)
        for name in sorted(n for n, child in stack.nats.items() if not child.running and n not in due):
            _schedule_nats(stack, name, loop.time(), due)
        for name in [n for n, when in due.items() if loop.time() >= when]:
            del due[name]
            await _restart(stack, name, due)
    return 0


def nats_label(name: str) -> str:
    """How the lines name a nats-server: `nats-server` alone, `nats-server nats-2` in a cluster."""
    return "nats-server" if name == "nats" else f"nats-server {name}"


async def _restart(stack: Stack, name: str, due: dict[str, float]) -> None:
    if name not in stack.nats:
        await stack.start_service(name)
        say(stack.console, f"{name} restarted")
        return
    try:
        await stack.start_nats_node(name)
    except (RuntimeError, OSError) as error:
        say(stack.console, f"{nats_label(name)} did not come back: {error}", "bold red")
        return  # the next round sees it not running and schedules it again, a longer wait
    say(stack.console, f"{nats_label(name)} restarted; the services reconnect on their own")


def _schedule_nats(stack: Stack, name: str, now: float, due: dict[str, float]) -> None:
    code = stack.nats[name].process.returncode or 0
    wait, stack.restarts[name] = next_restart(-1 if code == BAD_SETTING_EXIT else code,
                                              stack.restarts.get(name, Restarts()), now)
    others = "the other nodes and the balancers keep serving" if len(stack.nats) > 1 else "the balancers keep serving"
    say(stack.console, f"{nats_label(name)} exited with code {code}; restarting in {wait:g} s ({others})",
        "bold red")
    due[name] = now + (wait or 1.0)


def _schedule(stack: Stack, name: str, now: float, due: dict[str, float], down: set[str]) -> None:
    """Say that `name` exited, and either put its restart in `due` or leave it in `down`."""
    code = stack.services[name].process.returncode or 0
    wait, stack.restarts[name] = next_restart(code, stack.restarts[name], now)
    if wait is None:
        say(stack.console, f"{name} exited with code {code} (a setting it refused): left down; fix it and run up again",
            "bold red")
        down.add(name)
        return
    say(stack.console, f"{name} exited with code {code}; restarting in {wait:g} s", "bold red")
    due[name] = now + wait
