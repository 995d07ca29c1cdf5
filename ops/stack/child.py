"""One supervised child of `quicfleet up`: spawned in its own session, dying with its parent, its output
printed line by line behind its coloured name.

Separate from `ops.stack.supervisor` because this is the process level (how one child is started,
read and stopped), while the supervisor decides which children run, in what order, and when.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal

from rich.console import Console
from rich.text import Text

from ops.stack.plan import style_of
from ops.stack.say import say

PR_SET_PDEATHSIG = 1
NATS_READY = b"Server is ready"


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the supervisor dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """One supervised process whose output is printed line by line behind its coloured name."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, console: Console) -> None:
        self.name = name
        self.process = process
        self.console = console
        self.ready = asyncio.Event()
        self.pump = asyncio.create_task(self._pump(), name=f"pump-{name}")

    async def _pump(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            if NATS_READY in raw:
                self.ready.set()
            line = raw.decode(errors="replace").rstrip("\n")
            prefix = Text(f"{self.name:>11} | ", style=style_of(self.name))
            self.console.print(prefix + Text.from_ansi(line), soft_wrap=True)

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    async def stop(self, grace_s: float) -> int:
        """SIGTERM, wait `grace_s`, then SIGKILL; returns the exit code."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                async with asyncio.timeout(grace_s):
                    await self.process.wait()
            except TimeoutError:
                say(self.console, f"{self.name} did not stop within {grace_s:g} s; killing it", "red")
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
        code = await self.process.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self.pump
        return code


async def spawn(name: str, argv: list[str], env: dict[str, str], console: Console) -> Child:
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
    )
    return Child(name, process, console)
