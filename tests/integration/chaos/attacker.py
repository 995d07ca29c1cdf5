"""A hostile HTTP/3 client in a process of its own, so its memory and CPU are not the balancer's.

`python -m tests.integration.chaos.attacker KIND PORT COUNT` prints one JSON line with what it saw:
  handshakes: COUNT connections at once, each held until all have ended; how many got in or were refused,
              and how many of those that got in were then served a GET (the balancer may refuse a
              connection over its cap only once its handshake is done, depending on the engine); half
              from 127.0.0.2, the rest from 127.0.0.3-9 (see `storm_source`)
  streams:    one connection sending COUNT slow GETs at once; how many were served, reset or failed
  loris:      COUNT connections that each send a POST's headers and part of its body, then the process
              exits on the spot (no CONNECTION_CLOSE): only the balancer's idle timeout can reclaim them
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter
from contextlib import AsyncExitStack

from tests.integration.balancer.h3client import _Client, h3_client

LORIS_FIELDS = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"localhost"),
                (b":path", b"/upload"), (b"content-length", b"100000")]


HOT_SOURCE = "127.0.0.2"
OTHER_SOURCES = 7


def storm_source(index: int) -> str:
    """Where handshake `index` comes from: every other one from one hot address, the rest spread over 7
    more (127.0.0.3-9), so both the per-address cap and the connection cap are met."""
    return HOT_SOURCE if index % 2 == 0 else f"127.0.0.{3 + index // 2 % OTHER_SOURCES}"


async def handshakes(port: int, count: int) -> dict[str, int]:
    release, outcomes = asyncio.Event(), Counter[str]()

    def ended(outcome: str) -> None:
        outcomes[outcome] += 1
        if outcomes["connected"] + outcomes["refused"] == count:
            release.set()

    async def attempt(index: int) -> None:
        try:
            async with h3_client(port, source=storm_source(index)) as client:
                ended("connected")
                await release.wait()
                response = await asyncio.wait_for(client.get("/"), 10)
                outcomes["served" if response.status == 200 else "not served"] += 1
        except (ConnectionError, TimeoutError):
            if not release.is_set():
                ended("refused")
            else:
                outcomes["not served"] += 1

    await asyncio.wait_for(asyncio.gather(*(attempt(index) for index in range(count))), 300)
    return dict(outcomes)


async def streams(port: int, count: int) -> dict[str, int]:
    outcomes = Counter[str]()
    async with h3_client(port) as client:

        async def one() -> None:
            try:
                response = await client.get("/slow?ms=100")
            except (TimeoutError, ConnectionError):
                outcomes["failed"] += 1
                return
            outcomes["reset" if response.reset else str(response.status)] += 1

        await asyncio.gather(*(one() for _ in range(count)))
    return dict(outcomes)


async def loris(port: int, count: int) -> dict[str, int]:
    async with AsyncExitStack() as stack:
        clients: list[_Client] = [await stack.enter_async_context(h3_client(port, source=f"127.0.0.{10 + i % 20}"))
                                  for i in range(count)]  # 20 addresses: under the per-address cap
        for client in clients:
            stream_id = client._quic.get_next_available_stream_id()
            client.http.send_headers(stream_id, LORIS_FIELDS)
            client.http.send_data(stream_id, b"x" * 1000, end_stream=False)
            client.transmit()
        print(json.dumps({"sent": count}), flush=True)
        os._exit(0)
    return {}  # pragma: no cover - the process is gone


def main() -> None:
    kind, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    work = {"handshakes": handshakes, "streams": streams, "loris": loris}[kind]
    print(json.dumps(asyncio.run(work(port, count))), flush=True)


if __name__ == "__main__":
    main()
