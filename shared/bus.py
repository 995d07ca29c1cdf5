"""The NATS side of every service: connect (and reconnect forever), publish, subscribe, request.

Everything that crosses the bus is a contract model; this module is the one place that turns
models into bytes and bytes back into models, so bad payloads are caught in one way everywhere.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from pydantic import BaseModel, TypeAdapter, ValidationError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from shared.contract.base import MAX_PAYLOAD_BYTES, ErrorCode, ErrorReply, OkReply, Reply
from shared.contract.subjects import Subjects
from shared.errors import BusError, NoResponders, describe_validation_error
from shared.logging import bind_message
from shared.settings import ServiceSettings, SettingsError
from shared.throttle import LineThrottle

log = structlog.get_logger("shared.bus")

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)
_REPLY: TypeAdapter[OkReply | ErrorReply] = TypeAdapter(Reply)


def connect_options(settings: ServiceSettings, name: str) -> dict[str, Any]:
    """nats-py options: reconnect without limit, credentials and TLS from settings."""
    options: dict[str, Any] = {
        "servers": [url.strip() for url in settings.nats_url.split(",")],
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 1,
        "ping_interval": 5,
        "max_outstanding_pings": 3,
        "connect_timeout": 2,
        "inbox_prefix": settings.nats_inbox_prefix,
    }
    if settings.nats_user:
        options["user"] = settings.nats_user
        options["password"] = nats_password(settings)
    if settings.nats_token:
        options["token"] = settings.nats_token.get_secret_value()
    if settings.nats_creds:
        options["user_credentials"] = str(settings.nats_creds)
    if settings.nats_tls_ca:
        options["tls"] = ssl.create_default_context(cafile=str(settings.nats_tls_ca))
    return options


def nats_password(settings: ServiceSettings) -> str:
    """The password from `nats_password`, else the first line of `nats_password_file`, else empty.

    A file keeps the secret out of the environment (which `ps e` and `/proc/<pid>/environ` show
    to the same user); an unreadable one is a setting to fix, so it exits like any bad setting.
    """
    if settings.nats_password is not None:
        return settings.nats_password.get_secret_value()
    if settings.nats_password_file is None:
        return ""
    try:
        return settings.nats_password_file.read_text().strip()
    except OSError as error:
        raise SettingsError(f"QUICFLEET_NATS_PASSWORD_FILE: cannot read {settings.nats_password_file}: "
                            f"{error.strerror or error}") from None


async def connect(settings: ServiceSettings, name: str) -> NATS:
    """Connect, retrying the first connection too (nats-py only retries after a first success)."""
    options = connect_options(settings, name) | _callbacks()
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type((OSError, NatsError, TimeoutError)),
        wait=wait_exponential_jitter(multiplier=0.2, max=5),
        before_sleep=lambda state: log.warning("nats.connect_retry", attempt=state.attempt_number),
    ):
        with attempt:
            return await nats.connect(**options)
    raise AssertionError("unreachable")  # pragma: no cover


def _callbacks() -> dict[str, Callable[..., Awaitable[None]]]:
    async def disconnected() -> None:
        log.warning("nats.disconnected")

    async def reconnected() -> None:
        log.info("nats.reconnected")

    async def closed() -> None:
        log.info("nats.closed")

    async def error(exc: Exception) -> None:
        log.warning("nats.error", error=str(exc) or type(exc).__name__)

    return {"disconnected_cb": disconnected, "reconnected_cb": reconnected, "closed_cb": closed, "error_cb": error}


def encode(model: BaseModel) -> bytes:
    """A model as the JSON bytes that go on the wire."""
    return model.model_dump_json(exclude_none=False).encode()


def decode(model: type[M], data: bytes) -> M:
    """Parse and validate a payload; raises BusError(invalid) with a readable message."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise BusError(ErrorCode.INVALID, f"payload of {len(data)} bytes is over the {MAX_PAYLOAD_BYTES} limit")
    try:
        return model.model_validate_json(data or b"{}")
    except ValidationError as error:
        raise BusError(ErrorCode.INVALID, describe_validation_error(error)) from None


class Bus:
    """A connected client plus the fleet's subjects; what services hold instead of raw NATS."""

    def __init__(self, nc: NATS, subjects: Subjects) -> None:
        self.nc = nc
        self.subjects = subjects
        self.throttle = LineThrottle()
        """Bad events per subject: counted always, logged at most a few per period."""

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    async def publish(self, subject: str, model: BaseModel) -> bool:
        """Publish an event; a full outbound buffer (long NATS outage) is logged, not raised."""
        try:
            await self.nc.publish(subject, encode(model))
        except NatsError as error:
            log.warning("bus.publish_failed", subject=subject, error=str(error) or type(error).__name__)
            return False
        return True

    async def subscribe(
        self,
        subject: str,
        model: type[M],
        handler: Callable[[M, Msg], Awaitable[None]],
        queue: str = "",
    ) -> Subscription:
        """Subscribe to events: bad payloads and failing handlers are logged; the bus moves on."""

        async def on_message(msg: Msg) -> None:
            bind_message(subject=msg.subject)
            try:
                event = decode(model, msg.data)
            except BusError as error:
                dropped = self.throttle.admit(msg.subject, time.monotonic())
                if dropped is not None:
                    log.warning("bus.bad_event", error=error.message, dropped_before=dropped,
                                total=self.throttle.totals[msg.subject])
                return
            try:
                await handler(event, msg)
            except Exception:
                log.exception("bus.event_handler_failed")

        return await self.nc.subscribe(subject, queue=queue, cb=on_message)

    async def request(self, subject: str, model: BaseModel, result: type[R], timeout: float = 5.0) -> R:
        """Send a command and return its result; an error reply or no responder raises BusError."""
        try:
            msg = await self.nc.request(subject, encode(model), timeout=timeout)
        except nats.errors.NoRespondersError:
            raise NoResponders(ErrorCode.UNAVAILABLE, f"no service answers {subject}") from None
        except (TimeoutError, nats.errors.TimeoutError):
            raise BusError(ErrorCode.UNAVAILABLE, f"no reply on {subject} within {timeout:g} s") from None
        return parse_reply(msg.data, result)

    async def gather(self, subject: str, model: BaseModel, result: type[R], window: float = 1.0) -> list[R]:
        """Scatter-gather: send one request, collect every valid ok reply that arrives within `window`.

        For questions every replica answers (e.g. each provisioner listing its VMs). Error or
        malformed replies are logged and left out.
        """
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        replies: list[R] = []
        try:
            await self.nc.publish(subject, encode(model), reply=inbox)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + window
            while (remaining := deadline - loop.time()) > 0:
                try:
                    msg = await sub.next_msg(timeout=remaining)
                except (TimeoutError, nats.errors.TimeoutError):
                    break
                if _no_responders(msg):
                    break
                try:
                    replies.append(parse_reply(msg.data, result))
                except BusError as error:
                    log.warning("bus.gather_bad_reply", subject=subject, error=error.message)
        finally:
            await sub.unsubscribe()
        return replies

    async def barrier(self, timeout: float = 10.0) -> None:
        """Return once the server has processed everything this client sent before (SUBs included).

        nats-py's `flush()` writes its PING ahead of commands still queued in the client, so it is
        no barrier: a service could say "started" before the server knows its subscriptions. A
        message to ourselves, sent after them, only comes back once they are all in place.
        """
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, max_msgs=1)
        try:
            await self.nc.publish(inbox, b"")
            await sub.next_msg(timeout=timeout)
        finally:
            await sub.unsubscribe()

    async def drain(self) -> None:
        """Finish what is in flight, unsubscribe, and close the connection, whatever its state.

        A service stopped while NATS is away must still exit cleanly: nats-py's drain refuses a
        reconnecting connection (ConnectionReconnectingError), and its close can then trip over
        the transport the failed reconnect left behind (RuntimeError). What cannot be drained
        is dropped with one log line; nothing here raises.
        """
        if self.nc.is_closed:
            return
        if self.nc.is_connected:
            try:
                await self.nc.drain()
                return
            except (NatsError, TimeoutError, OSError) as error:
                log.warning("nats.drain_failed", error=str(error) or type(error).__name__)
        else:
            log.warning("nats.closed_while_disconnected", detail="unsent messages and subscriptions are dropped")
        await self._close_quietly()

    async def _close_quietly(self) -> None:
        try:
            await self.nc.close()
        except (NatsError, TimeoutError, OSError, RuntimeError) as error:
            log.warning("nats.close_failed", error=str(error) or type(error).__name__)


def _no_responders(msg: Msg) -> bool:
    """NATS's own "503, no responders" status message (empty body), not a service's reply."""
    return not msg.data and (msg.headers or {}).get("Status") == "503"


def parse_reply(data: bytes, result: type[R]) -> R:
    """Unwrap the reply envelope into `result`, or raise the BusError it carries."""
    try:
        reply = _REPLY.validate_json(data)
    except ValidationError:
        raise BusError(ErrorCode.INTERNAL, "the reply is not a quicfleet reply envelope") from None
    if isinstance(reply, ErrorReply):
        raise BusError(reply.error.code, reply.error.message)
    try:
        return result.model_validate(reply.result)
    except ValidationError as error:
        raise BusError(ErrorCode.INTERNAL, "unexpected reply: " + describe_validation_error(error)) from None
