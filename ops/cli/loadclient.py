"""The HTTP/3 client connections `quicfleet load` sends on: many concurrent GETs over a few QUIC connections.

niquests waits for each answer before it sends the next request, so it cannot hold a rate; these
aioquic connections carry many streams at once. Kept apart from the loops (`load`) because this is
the only part that needs a socket: the loops are tested against a fake connection instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from contextlib import AsyncExitStack
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, ErrorCode, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset

from ops.cli.client import EXIT_UNREACHABLE, CliError
from ops.cli.loadoutcome import BACKEND_HEADER, BODY_HEAD_BYTES, Reply
from ops.cli.loadplan import Plan
from shared.contract.base import IDENTITY_HEADER

KEPT_HEADERS = frozenset({BACKEND_HEADER.encode(), IDENTITY_HEADER.encode()})


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
