"""`quicfleet health`: is NATS up with JetStream, and does each named service answer `$SRV.PING`?

Used as the compose healthcheck of every container and by `quicfleet up` to tell when the stack
is ready. `nats.micro` answers `$SRV.PING` (all services) and `$SRV.PING.<name>` for free.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError

from ops.cli.client import EXIT_UNREACHABLE, CliError

SERVICES = ("balancer", "metrics", "scaler", "provisioner")
NATS_TARGET = "nats"
PING_ALL = "$SRV.PING"
REPING_S = 0.5


@dataclass(frozen=True)
class Pong:
    """One service instance's answer to a ping."""

    name: str
    id: str
    instance: str


def parse_pong(data: bytes) -> Pong | None:
    """A micro ping response, or None when the bytes are not one (any responder may answer)."""
    try:
        body = json.loads(data)
        metadata = body.get("metadata") or {}
        return Pong(str(body["name"]), str(body["id"]), str(metadata.get("instance", "")))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def missing(wanted: list[str], pongs: list[Pong]) -> list[str]:
    """The wanted services no pong came from."""
    answered = {pong.name for pong in pongs}
    return [name for name in wanted if name not in answered]


async def check_nats(nc: NATS, timeout: float) -> None:
    """NATS answers and JetStream is enabled (the scaler's state lives in it)."""
    try:
        async with asyncio.timeout(timeout):
            await nc.jetstream().account_info()
    except (NatsError, TimeoutError) as error:
        raise CliError(f"NATS is up but JetStream does not answer: {error or type(error).__name__}",
                       EXIT_UNREACHABLE) from None


async def collect_pongs(nc: NATS, wanted: list[str], window: float) -> list[Pong]:
    """Ping every service, again every REPING_S (a service may register meanwhile), until each
    wanted one answered or `window` ends; one pong per service instance."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    pongs: dict[str, Pong] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + window
    next_ping = loop.time()
    try:
        while missing(wanted, list(pongs.values())) and (remaining := deadline - loop.time()) > 0:
            if loop.time() >= next_ping:
                await nc.publish(PING_ALL, b"", reply=inbox)
                next_ping = loop.time() + REPING_S
            try:
                msg = await sub.next_msg(timeout=max(0.01, min(remaining, next_ping - loop.time())))
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            if (pong := parse_pong(msg.data)) is not None:
                pongs[pong.id] = pong
    finally:
        await sub.unsubscribe()
    return list(pongs.values())


def targets(names: list[str]) -> tuple[bool, list[str]]:
    """Split the command's arguments into (check NATS?, services to ping); no names means everything."""
    unknown = [n for n in names if n not in (*SERVICES, NATS_TARGET)]
    if unknown:
        raise CliError(f"unknown service {', '.join(unknown)}; known: {NATS_TARGET}, {', '.join(SERVICES)}", 2)
    chosen = names or [NATS_TARGET, *SERVICES]
    return NATS_TARGET in chosen, [n for n in chosen if n != NATS_TARGET]


async def run_health(nc: NATS, names: list[str], window: float, timeout: float) -> list[Pong]:
    """Check what `names` asks for; CliError naming each service that did not answer."""
    with_nats, services = targets(names)
    if with_nats:
        await check_nats(nc, timeout)
    pongs = await collect_pongs(nc, services, window) if services else []
    absent = missing(services, pongs)
    if absent:
        raise CliError(f"no answer on $SRV.PING within {window:g} s from: {', '.join(absent)}", EXIT_UNREACHABLE)
    return pongs
