"""`quicfleet load`: HTTP/3 load through the balancer, at a rate (open loop) or a concurrency (closed loop).

The requests share a few aioquic client connections, many streams on each: niquests waits for
each answer before it sends the next request, so it cannot hold a rate. The open loop starts
request k at k / rate whatever the earlier ones did (that is what lets an overload show), but
never with more than `max_in_flight` waiting: a request due past that is dropped and counted, so a
stalled balancer costs errors, not memory. The counting and the arithmetic are in `loadcore`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from typing import Any, Protocol

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, ErrorCode, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset
from rich.live import Live
from rich.text import Text

from ops.cli.client import EXIT_UNREACHABLE, CliError
from ops.cli.console import err
from ops.cli.loadcore import (
    BACKEND_HEADER,
    BODY_HEAD_BYTES,
    ErrorKind,
    LoadSummary,
    Outcome,
    Plan,
    RateSchedule,
    Reply,
    Tally,
    failed,
    live_line,
    outcome,
    summarize,
)
from shared.contract.base import IDENTITY_HEADER

KEPT_HEADERS = frozenset({BACKEND_HEADER.encode(), IDENTITY_HEADER.encode()})
LOG_EVERY_S = 10
"""Without a terminal (CI logs) the live line is printed this often instead of refreshed."""
Show = Callable[[str], None]


class _Exchange:
    """One request in flight: what its stream has delivered so far, and who waits for it."""

    __slots__ = ("body", "future", "headers", "status")

    def __init__(self, future: asyncio.Future[Reply]) -> None:
        self.future = future
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = bytearray()

    def finish(self, reset: bool = False) -> None:
        if not self.future.done():
            head = bytes(self.body).decode(errors="replace")
            self.future.set_result(Reply(self.status, self.headers, head, reset))


class H3Client(QuicConnectionProtocol):
    """One QUIC connection carrying many concurrent GETs, each answered through its own future."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http = H3Connection(self._quic)
        self._exchanges: dict[int, _Exchange] = {}
        self._flush_due = False
        self.closed_reason: str | None = None

    async def wait_connected(self) -> None:
        """aioquic's, except that a handshake failing after a timeout gave up on it raises into nobody."""
        if not self._connected:
            waiter = self._connected_waiter = self._loop.create_future()
            waiter.add_done_callback(_seen)
            await asyncio.shield(waiter)

    async def get(self, authority: str, path: str) -> Reply:
        """Send a GET on a new stream and wait for its whole answer; ConnectionError once the connection is gone."""
        if self.closed_reason is not None:
            raise ConnectionError(self.closed_reason)
        stream_id = self._quic.get_next_available_stream_id()
        exchange = self._exchanges[stream_id] = _Exchange(self._loop.create_future())
        self._http.send_headers(stream_id, [
            (b":method", b"GET"), (b":scheme", b"https"), (b":authority", authority.encode()),
            (b":path", path.encode()), (b"user-agent", b"quicfleet-load"),
        ], end_stream=True)
        self._flush_soon()
        try:
            return await exchange.future
        except asyncio.CancelledError:
            self._abandon(stream_id)
            raise

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            self._terminated(event.reason_phrase or f"closed with error {event.error_code:#x}")
        elif isinstance(event, StreamReset) and event.stream_id in self._exchanges:
            self._exchanges.pop(event.stream_id).finish(reset=True)
        for http_event in self._http.handle_event(event):
            self._http_event(http_event)

    def _http_event(self, event: H3Event) -> None:
        if not isinstance(event, HeadersReceived | DataReceived) or event.stream_id not in self._exchanges:
            return
        exchange = self._exchanges[event.stream_id]
        if isinstance(event, HeadersReceived):
            if exchange.status < 200:  # an informational head, or the response's; a later one is trailers
                exchange.status, exchange.headers = _head(event.headers)
        elif len(exchange.body) < BODY_HEAD_BYTES:
            exchange.body += event.data[: BODY_HEAD_BYTES - len(exchange.body)]
        if event.stream_ended:
            del self._exchanges[event.stream_id]
            exchange.finish()

    def _terminated(self, reason: str) -> None:
        """Fail everything still waiting: the connection will not answer it."""
        self.closed_reason = reason
        exchanges, self._exchanges = self._exchanges, {}
        for exchange in exchanges.values():
            if not exchange.future.done():
                exchange.future.set_exception(ConnectionError(reason))

    def _abandon(self, stream_id: int) -> None:
        """A request given up on (timeout): ask the balancer to stop sending its answer."""
        if self._exchanges.pop(stream_id, None) is not None and self.closed_reason is None:
            with contextlib.suppress(ValueError):  # aioquic: the stream already ended both ways
                self._quic.stop_stream(stream_id, ErrorCode.H3_REQUEST_CANCELLED)
            self._flush_soon()

    def _flush_soon(self) -> None:
        """One transmit for every request started in this turn of the loop: fewer, fuller datagrams."""
        if not self._flush_due:
            self._flush_due = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        self.transmit()


def _seen(future: asyncio.Future[Any]) -> None:
    """Read a future's outcome, so asyncio does not warn that its exception was never retrieved."""
    if not future.cancelled():
        future.exception()


def _head(headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[str, str]]:
    """A response head's status (0 when unreadable) and the headers that name the backend."""
    fields = dict(headers)
    status = fields.get(b":status", b"")
    kept = {name.decode(): fields[name].decode(errors="replace")[:100] for name in KEPT_HEADERS if name in fields}
    return (int(status) if status.isdigit() else 0), kept


def client_config(plan: Plan) -> QuicConfiguration:
    """HTTP/3 over QUIC; the certificate is checked only with --verify or --ca-file (the dev one is self-signed).

    The idle timeout is short (twice the request timeout) because a restarted balancer does not know
    the old connection and says nothing: only silence ends it, and then a new connection is made.
    """
    verify = plan.verify or plan.ca_file is not None
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, idle_timeout=max(2 * plan.timeout_s, 1.0),
                               verify_mode=ssl.CERT_REQUIRED if verify else ssl.CERT_NONE)
    if plan.ca_file is not None:
        config.load_verify_locations(cafile=str(plan.ca_file))
    return config


class _Slot:
    """One client connection, replaced on next use once it has closed, by one attempt its waiters share."""

    def __init__(self, plan: Plan) -> None:
        self._plan = plan
        self._client: H3Client | None = None
        self._stack: AsyncExitStack | None = None
        self._attempt: asyncio.Task[H3Client] | None = None

    async def client(self) -> H3Client:
        """The live connection, or a new one; ConnectionError (with the reason) when it cannot be made."""
        if self._client is not None and self._client.closed_reason is None:
            return self._client
        if self._attempt is None:
            self._attempt = asyncio.get_running_loop().create_task(self._connect())
            self._attempt.add_done_callback(self._attempted)
        return await asyncio.shield(self._attempt)  # one waiter's timeout must not cancel the others' attempt

    def _attempted(self, task: asyncio.Task[H3Client]) -> None:
        self._attempt = None
        _seen(task)  # every waiter may have given up on it already

    async def _connect(self) -> H3Client:
        await self.close()
        made: list[H3Client] = []

        def protocol(*args: Any, **kwargs: Any) -> H3Client:
            made.append(H3Client(*args, **kwargs))
            return made[-1]

        stack = AsyncExitStack()
        target = self._plan.target
        try:
            async with asyncio.timeout(self._plan.timeout_s):
                await stack.enter_async_context(connect(
                    target.host, target.port, configuration=client_config(self._plan), create_protocol=protocol))
        except OSError as error:  # ConnectionError, TimeoutError and resolver errors are all OSErrors
            await stack.aclose()
            raise ConnectionError(_describe(error, made[0] if made else None, self._plan)) from None
        self._client, self._stack = made[0], stack
        return made[0]

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()


def _describe(error: OSError, client: H3Client | None, plan: Plan) -> str:
    """Why a connection could not be made: the peer's close reason (a TLS alert, say), else the error."""
    if isinstance(error, TimeoutError):
        return f"no QUIC handshake within {plan.timeout_s:g} s"
    if client is not None and client.closed_reason:
        return client.closed_reason
    return str(error) or type(error).__name__


class Connections:
    """`plan.connections` client connections, taken in turn by the requests."""

    def __init__(self, plan: Plan) -> None:
        self._slots = [_Slot(plan) for _ in range(plan.connections)]
        self._turn = 0
        self._url = plan.target.url

    async def open(self) -> None:
        """Connect every slot before the clock starts; CliError (exit 3) when not even one can."""
        results = await asyncio.gather(*(slot.client() for slot in self._slots), return_exceptions=True)
        errors = [result for result in results if isinstance(result, BaseException)]
        if len(errors) == len(results):
            raise CliError(f"cannot reach {self._url} over HTTP/3: {errors[0]}", EXIT_UNREACHABLE)

    async def next(self) -> H3Client:
        self._turn += 1
        return await self._slots[self._turn % len(self._slots)].client()

    async def close(self) -> None:
        await asyncio.gather(*(slot.close() for slot in self._slots))


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
