"""B2: payloads at and above NATS's max_payload and our own caps; HTTP/3 headers and bodies above the balancer's."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlparse

import pytest

from ops.natsserver import NatsServer
from services.scaler.bootstrap import bootstrap as scaler_bootstrap
from services.scaler.settings import ScalerSettings
from shared.bus import Bus
from shared.contract.base import MAX_PAYLOAD_BYTES, ErrorReply
from tests.integration.balancer.h3client import h3_client
from tests.integration.balancer.harness import StartBalancer, announce
from tests.integration.chaos.probe import invalid_reply_problem, rss_mib
from tests.support import chaos, wait_until
from tests.support.h1server import H1Backend

pytestmark = pytest.mark.chaos

ROUNDS = 200 if chaos.long_variants() else 20
HEADER_CAP, BODY_CAP = 4096, 64 * 1024


async def _raw_oversized_publish(url: str, subject: str, size: int) -> bytes:
    """PUB `size` bytes on a raw NATS connection (nats-py refuses to send it); the server's answer."""
    parsed = urlparse(url)
    reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
    try:
        await reader.readline()  # INFO
        writer.write(b'CONNECT {"verbose":false,"pedantic":false}\r\n')
        writer.write(f"PUB {subject} {size}\r\n".encode() + b"x" * size + b"\r\nPING\r\n")
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()


async def test_bus_payloads_at_and_over_the_caps_are_refused_and_the_services_stay_up(
    bus: Bus, nats_server: NatsServer, settings_env: dict[str, str]
) -> None:
    """Over our 256 KiB cap: `invalid` before parsing; at it: parsed; over NATS's max: the server refuses it."""
    async with scaler_bootstrap(ScalerSettings(scaler_id="s1", lease_ttl_s=2)) as scaler:
        rss_before = rss_mib()
        nats_max = bus.nc.max_payload
        sizes = [MAX_PAYLOAD_BYTES + 1, MAX_PAYLOAD_BYTES * 2, nats_max - 512]
        over = []
        for _ in range(ROUNDS):
            for size in sizes:
                msg = await bus.nc.request(bus.subjects.cmd_scale, b"{" + b" " * (size - 2) + b"}", timeout=10)
                over.append((size, invalid_reply_problem(msg), ErrorReply.model_validate_json(msg.data)))
        at_cap = await bus.nc.request(bus.subjects.cmd_scale, b" " * (MAX_PAYLOAD_BYTES - 2) + b"{}", timeout=10)
        for _ in range(ROUNDS):
            await bus.nc.publish(bus.subjects.balancer_report, b"x" * (MAX_PAYLOAD_BYTES + 1))
        answer = await _raw_oversized_publish(nats_server.url, bus.subjects.cmd_scale, nats_max + 1)
        await wait_until(lambda: scaler.bus.throttle.totals[bus.subjects.balancer_report] == ROUNDS, 10,
                         what="every oversized event counted")
        alive = await bus.nc.request(bus.subjects.cmd_status, b"{}", timeout=10)
        connected = scaler.bus.connected
        growth = rss_mib() - rss_before
    assert all(problem is None for _, problem, _ in over), over[:3]
    assert all("over the 262144 limit" in reply.error.message for _, _, reply in over)
    at_cap_error = ErrorReply.model_validate_json(at_cap.data).error.message
    assert "limit" not in at_cap_error and "replicas" in at_cap_error  # parsed: the field is missing
    assert b"Maximum Payload" in answer
    assert json.loads(alive.data)["ok"] is True and connected
    assert growth < chaos.RSS_GROWTH_LIMIT_MIB
    chaos.record(chaos.Row(
        scenario="B2", title="oversized bus payloads", load="scaler on real NATS", inputs=len(over) + ROUNDS + 2,
        invariants={"I4": "pass"},
        figures=f"{len(over)} commands over the {MAX_PAYLOAD_BYTES} B cap answered invalid; {ROUNDS} oversized "
                f"events counted; PUB of {nats_max + 1} B refused by nats-server; RSS {growth:+.1f} MiB",
    ))


async def test_http3_headers_and_bodies_over_the_caps_get_431_and_413_with_memory_bounded(
    bus: Bus, start_balancer: StartBalancer
) -> None:
    """Headers over listen_max_header_bytes get 431, bodies over listen_max_body_bytes 413; RSS stays bounded."""
    settings = {"listen_max_header_bytes": HEADER_CAP, "listen_max_body_bytes": BODY_CAP}
    async with H1Backend() as backend, start_balancer(**settings) as lb:
        await announce(bus, lb, "vm-a", backend.address)
        rss_before = rss_mib()
        statuses: dict[str, list[int]] = {"one big header": [], "many headers": [], "big body": [], "fits": []}
        async with h3_client(lb.port) as client:
            for _ in range(ROUNDS):
                big = await client.get("/", [(b"x-big", b"z" * (HEADER_CAP * 4))])
                many = await client.get("/", [(f"x-{i}".encode(), b"v" * 40) for i in range(200)])
                body = await client.request("POST", "/upload", body=b"b" * (BODY_CAP * 16))
                fits = await client.request("POST", "/upload", body=b"b" * (BODY_CAP // 2))
                for name, response in zip(statuses, (big, many, body, fits), strict=True):
                    statuses[name].append(response.status)
        growth = rss_mib() - rss_before
    assert set(statuses["one big header"]) == set(statuses["many headers"]) == {431}
    assert set(statuses["big body"]) == {413} and set(statuses["fits"]) == {200}
    assert growth < chaos.RSS_GROWTH_LIMIT_MIB
    chaos.record(chaos.Row(
        scenario="B2", title="oversized HTTP/3 headers and bodies", load="balancer + HTTP/1.1 backend",
        inputs=3 * ROUNDS, invariants={"I4": "pass"},
        figures=f"{2 * ROUNDS} header floods -> 431 (cap {HEADER_CAP} B), {ROUNDS} bodies of {BODY_CAP * 16} B "
                f"-> 413 (cap {BODY_CAP} B), fitting body 200; RSS {growth:+.1f} MiB",
    ))
