"""`quicfleet load`: HTTP/3 load through the balancer, at a rate (open loop) or a concurrency (closed loop).

The requests share a few aioquic client connections (`loadclient`), many streams on each. The open
loop starts request k at k / rate whatever the earlier ones did (that is what lets an overload show),
but never with more than `max_in_flight` waiting: a request due past that is dropped and counted, so
a stalled balancer costs errors, not memory. The counting and the arithmetic are in `loadcore`.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.live import Live
from rich.text import Text

from ops.cli.console import err
from ops.cli.loadclient import Connections
from ops.cli.loadoutcome import ErrorKind, Outcome, Reply, failed, outcome
from ops.cli.loadplan import Plan, RateSchedule
from ops.cli.loadstats import LoadSummary, Tally, summarize
from ops.cli.loadtext import live_line

__all__ = ["ClientSource", "Connections", "Getter", "LoadRun", "Show", "live_display", "run"]

LOG_EVERY_S = 10
"""Without a terminal (CI logs) the live line is printed this often instead of refreshed."""
Show = Callable[[str], None]


class Getter(Protocol):
    """What a request needs of a connection (an `H3Client`; a fake in the unit tests)."""

    async def get(self, authority: str, path: str) -> Reply: ...


class ClientSource(Protocol):
    """Where requests take their connection from (`Connections`; a fake in the unit tests)."""

    async def next(self) -> Getter: ...


class LoadRun:
    """One run's moving parts: the connections, the requests in flight, and the counts so far."""

    def __init__(self, plan: Plan, connections: ClientSource) -> None:
        self.plan = plan
        self.connections = connections
        self.total = Tally()
        self.window = Tally()
        self.in_flight = 0
        self.stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def execute(self, show: Show) -> LoadSummary:
        """Send for the plan's duration (or until Ctrl-C), wait for what is in flight, and summarize."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        reporter = loop.create_task(self._report(show, started))
        with _first_interrupt_stops(self):
            try:
                if self.plan.rate is not None:
                    await self._open_loop(RateSchedule(self.plan.rate, self.plan.duration_s))
                else:
                    await self._closed_loop(self.plan.concurrency or 1)
                await asyncio.gather(*self._tasks)
            finally:
                reporter.cancel()
        return summarize(self.plan, self.total, loop.time() - started, interrupted=self.stopping)

    async def _open_loop(self, schedule: RateSchedule) -> None:
        """Start each request when it is due; after a late wake-up, every overdue one at once."""
        loop = asyncio.get_running_loop()
        start, sent = loop.time(), 0
        while sent < schedule.total and not self.stopping:
            due = schedule.due(loop.time() - start)
            for _ in range(sent, due):
                self._launch()
            sent = max(sent, due)
            if sent < schedule.total:
                await asyncio.sleep(max(0.0, start + schedule.at(sent) - loop.time()))

    def _launch(self) -> None:
        if self.in_flight >= self.plan.max_in_flight:
            self._record(failed(ErrorKind.DROPPED))
            return
        self.in_flight += 1
        task = asyncio.get_running_loop().create_task(self._one())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _closed_loop(self, concurrency: int) -> None:
        """`concurrency` workers, each sending its next request as soon as its last one ended."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.plan.duration_s

        async def worker() -> None:
            while loop.time() < end and not self.stopping:
                self.in_flight += 1
                await self._one()

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def _one(self) -> None:
        try:
            self._record(await self._request())
        finally:
            self.in_flight -= 1

    async def _request(self) -> Outcome:
        """One GET, timed from before it waits for a connection; every failure becomes its kind.

        Timed with perf_counter: uvloop's loop.time() moves in whole milliseconds.
        """
        began = time.perf_counter()
        target = self.plan.target
        try:
            client = await self.connections.next()
            async with asyncio.timeout(self.plan.timeout_s):
                reply = await client.get(target.authority, target.path)
        except TimeoutError:
            return failed(ErrorKind.TIMEOUT)
        except ConnectionError:
            return failed(ErrorKind.CONNECTION)
        return outcome(reply, time.perf_counter() - began)

    def _record(self, result: Outcome) -> None:
        self.total.record(result)
        self.window.record(result)

    async def _report(self, show: Show, started: float) -> None:
        """Each second, the live line over the second just gone; then a fresh window."""
        loop = asyncio.get_running_loop()
        window_start = started
        while True:
            await asyncio.sleep(1.0)
            now = loop.time()
            show(live_line(now - started, self.window, now - window_start, self.total, self.in_flight))
            self.window, window_start = Tally(), now


@contextmanager
def _first_interrupt_stops(run: LoadRun) -> Iterator[None]:
    """The first Ctrl-C ends the run early, still with its summary; a second one interrupts as usual."""
    loop = asyncio.get_running_loop()

    def stop() -> None:
        run.stopping = True
        loop.remove_signal_handler(signal.SIGINT)

    loop.add_signal_handler(signal.SIGINT, stop)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


async def run(plan: Plan, show: Show) -> LoadSummary:
    """Connect, run the plan, close; CliError (exit 3) when the balancer cannot be reached at all."""
    connections = Connections(plan)
    try:
        await connections.open()
        return await LoadRun(plan, connections).execute(show)
    finally:
        await connections.close()


@contextmanager
def live_display(quiet: bool) -> Iterator[Show]:
    """Where the live line goes: refreshed in place on a terminal (stderr, so `--json` stdout stays clean);
    else printed every LOG_EVERY_S seconds for a log, or not at all with `--json`."""
    if err.is_terminal:
        with Live(console=err, auto_refresh=False, transient=True, redirect_stdout=False,
                  redirect_stderr=False) as live:
            yield lambda line: live.update(Text(line), refresh=True)
        return
    ticks = 0

    def log(line: str) -> None:
        nonlocal ticks
        ticks += 1
        if not quiet and ticks % LOG_EVERY_S == 0:
            err.print(line, markup=False, soft_wrap=True)

    yield log
