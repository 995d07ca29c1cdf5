"""Steady HTTP/3 load for drain and restart tests: clients that honour GOAWAY and count every failure."""

from __future__ import annotations

import asyncio

from tests.integration.balancer.h3client import _Client, h3_client


class Load:
    """Clients in a loop that honour GOAWAY as RFC 9114 asks: no new request on a connection told to go
    away, and a request on a stream at or above the GOAWAY id (never processed) is sent again."""

    def __init__(self, port: int, path: str = "/") -> None:
        self.port = port
        self.path = path
        self.ok = 0
        self.failed: list[str] = []
        self.moved = 0
        self.stop = False
        self.rebind = asyncio.Event()
        """Once set, each connection of a `run(rebind=True)` moves to a new source port (once)."""
        self.rebound = 0

    async def run(self, rebind: bool = False) -> None:
        while not self.stop:
            async with h3_client(self.port) as connection:
                moved = False
                while not self.stop and connection.goaway is None and not connection.terminated.is_set():
                    if rebind and not moved and self.rebind.is_set():
                        await connection.rebind()
                        moved, self.rebound = True, self.rebound + 1
                    await self._one(connection)
                self.moved += connection.goaway is not None

    async def _one(self, connection: _Client) -> None:
        stream_id = connection._quic.get_next_available_stream_id()
        try:
            response = await asyncio.wait_for(connection.get(self.path), 5)
        except (TimeoutError, ConnectionError) as error:
            if not self._unprocessed(connection, stream_id):
                self.failed.append(f"{error!r} on stream {stream_id}, goaway {connection.goaway}")
            return
        if response.reset and self._unprocessed(connection, stream_id):
            return
        if response.status != 200:
            self.failed.append(f"status {response.status} reset={response.reset}")
        else:
            self.ok += 1

    @staticmethod
    def _unprocessed(connection: _Client, stream_id: int) -> bool:
        return connection.goaway is not None and stream_id >= connection.goaway
