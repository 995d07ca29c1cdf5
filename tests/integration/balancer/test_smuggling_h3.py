"""Smuggling and injection over HTTP/3, on each QUIC engine (aioquic and qh3, the folder's engine fixture).

The 72 header lists of the corpus (smuggling_corpus.BLOCKS) are sent unvalidated by an aioquic
client (its H3 layer checks nothing it sends) to a raw recording HTTP/1.1 backend through the
balancer; each asserts on the bytes the backend received (one request, canonical framing, nothing
injected) or on the refusal (a 400, a stream reset or the connection closed; the backend got nothing).
"""

from __future__ import annotations

import asyncio

from shared.bus import Bus
from tests.integration.balancer.h3client import Response, h3_client
from tests.integration.balancer.harness import StartBalancer, announce
from tests.integration.balancer.smuggling_corpus import BLOCKS, Block, problems_of_forwarded
from tests.support.recorder import Recorder, recording_backend

TIMEOUT_S = 10
REFUSALS = {"400", "reset", "closed"}


async def h3_exchange(port: int, case: Block) -> str:
    """Send one header list on a fresh HTTP/3 connection: `200`, `400`…, `reset` or `closed`."""
    async with h3_client(port) as client:
        stream_id = client._quic.get_next_available_stream_id()
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        client.pending[stream_id] = (Response(), future)
        client.http.send_headers(stream_id, case.headers, end_stream=case.body is None)
        if case.body is not None:
            client.http.send_data(stream_id, case.body, end_stream=True)
        client.transmit()
        try:
            response = await asyncio.wait_for(future, TIMEOUT_S)
        except ConnectionError:
            return "closed"
        return "reset" if response.reset else str(response.status)


async def run_block(case: Block, port: int, recorder: Recorder) -> list[str]:
    recorder.clear()
    outcome = await h3_exchange(port, case)
    if case.forwarded:
        problems = [] if outcome == "200" else [f"answered {outcome}"]
        problems += problems_of_forwarded(recorder.requests(), case.path, case.body or b"")
    else:
        problems = [] if outcome in REFUSALS else [f"answered {outcome}"]
        if recorder.raw():
            problems.append(f"backend got {recorder.raw()[:120]!r}")
    return [f"{case.name}: {p}" for p in problems]


async def test_http3_corpus_is_refused_or_forwarded_canonically(
    quic_engine: str, bus: Bus, start_balancer: StartBalancer
) -> None:
    """Each of the 72 header-list cases sent over HTTP/3 is refused with nothing at the backend, or reaches it as
    exactly one canonical request, on this QUIC engine."""
    async with recording_backend() as recorder, start_balancer() as balancer:
        await announce(bus, balancer, "vm-a", recorder.address)
        problems = [p for case in BLOCKS for p in await run_block(case, balancer.port, recorder)]
    assert len(BLOCKS) == 72
    assert problems == [], f"{quic_engine}:\n" + "\n".join(problems)
