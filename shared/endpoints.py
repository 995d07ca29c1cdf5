"""Command endpoints on `nats.micro`: parse, call the handler, answer with the reply envelope.

A handler takes a validated command model and returns a result model. It signals a failure the
caller should see by raising `BusError`; anything else is logged with its stack and answered
`internal` with a neutral message, so no repr() or trace ever reaches a caller.

Every command answered `invalid` is counted per subject, and so is every bad event the service's
bus dropped: the service's `$SRV.STATS` reply carries both, per subject, in each endpoint's `data`
as `{"rejected_inputs": {subject: count}}` (micro has no service-level data field, so every
endpoint carries the same whole-service map). The metrics service collects them from there.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointStats, Service

from shared.bus import Bus, decode
from shared.contract.base import ERROR_HEADER_CODES, ErrorBody, ErrorCode, ErrorReply, OkReply
from shared.errors import BusError
from shared.logging import bind_message
from shared.throttle import LineThrottle, Tally, rejected_inputs

log = structlog.get_logger("shared.endpoints")

VERSION = "0.1.0"
STATS_KEY = "rejected_inputs"
"""The key of the per-subject rejected-input counts in each endpoint's `$SRV.STATS` data."""


@dataclass(frozen=True)
class Endpoint:
    """One command: its micro name, subject, request model and handler."""

    name: str
    subject: str
    model: type[Any]
    handler: Callable[[Any], Awaitable[Any]]
    queue: str | None = None


def ok_reply(result: Any) -> bytes:
    """The `{"ok": true, "result": …}` bytes for a result model (or plain dict)."""
    payload = result.model_dump(mode="json") if hasattr(result, "model_dump") else dict(result or {})
    return OkReply(result=payload).model_dump_json().encode()


def error_reply(code: ErrorCode, message: str) -> tuple[bytes, dict[str, str]]:
    """The error envelope and the NATS micro error headers that go with it."""
    body = ErrorReply(error=ErrorBody(code=code, message=message[:2000])).model_dump_json().encode()
    headers = {"Nats-Service-Error": message[:500], "Nats-Service-Error-Code": ERROR_HEADER_CODES[code]}
    return body, headers


REFUSALS = LineThrottle()
"""Refused commands per subject and code, for the whole process: every one is answered, a few are logged."""


def wrap(endpoint: Endpoint, rejected: Tally | None = None) -> Callable[[Request], Awaitable[None]]:
    """Adapt a typed handler into a micro handler that always answers with the envelope.

    Each command answered `invalid` is counted in `rejected` under the endpoint's subject.
    """
    tally = rejected if rejected is not None else Tally()

    async def handle(request: Request) -> None:
        request_id = (request.headers or {}).get("Nats-Msg-Id") or uuid.uuid4().hex[:12]
        bind_message(subject=request.subject, request_id=request_id)
        try:
            command = decode(endpoint.model, request.data)
            result = await endpoint.handler(command)
        except BusError as error:
            if error.code is ErrorCode.INVALID:
                tally.add(endpoint.subject)
            key = f"{request.subject} {error.code.value}"
            if (dropped := REFUSALS.admit(key, time.monotonic())) is not None:
                log.warning("command.refused", code=error.code.value, error=error.message, dropped_before=dropped,
                            total=REFUSALS.totals[key])
            await _respond_error(request, error.code, error.message)
            return
        except Exception:
            log.exception("command.failed")
            await _respond_error(request, ErrorCode.INTERNAL, f"internal error (request {request_id}); see logs")
            return
        log.info("command.done")
        await _respond(request, ok_reply(result))

    return handle


async def _respond(request: Request, data: bytes, headers: dict[str, str] | None = None) -> None:
    """Reply if the caller asked for one (a plain publish has no reply subject)."""
    if request._msg.reply:
        await request.respond(data, headers=headers)


async def _respond_error(request: Request, code: ErrorCode, message: str) -> None:
    body, headers = error_reply(code, message)
    await _respond(request, body, headers)


async def start_service(
    bus: Bus, name: str, description: str, endpoints: list[Endpoint], metadata: dict[str, str] | None = None
) -> Service:
    """Register a micro service (so `$SRV.PING` and `nats micro ls` find it) with its endpoints.

    Its `$SRV.STATS` reply carries the service's rejected-input counts (see the module's docstring).
    """
    commands = Tally()

    def stats(_endpoint: EndpointStats) -> dict[str, dict[str, int]]:
        return {STATS_KEY: rejected_inputs(commands.counts, bus.throttle.totals)}

    service = await add_service(
        bus.nc, name=name, version=VERSION, description=description, metadata=metadata or {}, stats_handler=stats
    )
    for endpoint in endpoints:
        await service.add_endpoint(
            name=endpoint.name, subject=endpoint.subject, handler=wrap(endpoint, commands), queue_group=endpoint.queue
        )
    return service
