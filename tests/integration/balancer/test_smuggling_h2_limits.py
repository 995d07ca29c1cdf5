"""HTTP/2 clients that cost more than they send: an HPACK bomb and a rapid-reset burst end their own connection only."""

from __future__ import annotations

import asyncio
import ssl

import h2.config
import h2.connection
import h2.events
import pytest
from h2.errors import ErrorCodes

from shared.bus import Bus
from tests.integration.balancer.harness import StartBalancer, announce
from tests.support.recorder import Recorder, recording_backend

TIMEOUT_S = 10
GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"example.org"), (b":path", b"/c")]


@pytest.fixture
def quic_engine() -> str:
    """The TCP fronts do not depend on the QUIC engine: run these once."""
    return "aioquic"


class Client:
    """A raw h2 client over TLS that sends what it is told and records how the server ended things."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.statuses: dict[int, int] = {}

    @classmethod
    async def connect(cls, port: int) -> Client:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        context.set_alpn_protocols(["h2"])
        return cls(*await asyncio.open_connection("127.0.0.1", port, ssl=context))

    def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())

    async def until_goaway(self) -> int | None:
        """The GOAWAY error code the server ends with (None: it closed without one)."""
        while data := await asyncio.wait_for(self.reader.read(65536), TIMEOUT_S):
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.ConnectionTerminated):
                    return None if event.error_code is None else int(event.error_code)
        return None

    async def get(self) -> int:
        """One GET on a new stream: its status."""
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, GET, end_stream=True)
        self.flush()
        while stream_id not in self.statuses:
            data = await asyncio.wait_for(self.reader.read(65536), TIMEOUT_S)
            assert data, "the server closed the connection"
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    self.statuses[event.stream_id] = int(dict(event.headers)[b":status"])
            self.flush()
        return self.statuses[stream_id]

    def close(self) -> None:
        self.writer.close()


def served(recorder: Recorder) -> int:
    return len(recorder.requests())


async def test_an_hpack_bomb_is_cut_before_it_is_decoded_in_full(bus: Bus, start_balancer: StartBalancer) -> None:
    """A 4 KB table entry referenced 20,000 times (80 MB decoded from a 24 KB block) gets GOAWAY
    ENHANCE_YOUR_CALM, reaches no backend, and a client on another connection is still answered."""
    async with recording_backend() as recorder, start_balancer() as balancer:
        await announce(bus, balancer, "vm-a", recorder.address)
        bomber, bystander = await Client.connect(balancer.port), await Client.connect(balancer.port)
        try:
            big = (b"x-big", b"a" * 4000)
            bomber.conn.send_headers(1, [*GET, *[big] * 20_000], end_stream=True)
            bomber.flush()
            code = await bomber.until_goaway()
            status = await bystander.get()
            reached = served(recorder)
        finally:
            bomber.close()
            bystander.close()
    assert code == ErrorCodes.ENHANCE_YOUR_CALM
    assert status == 200
    assert reached == 1, "only the bystander's request reached the backend"


async def test_rapid_reset_gets_goaway_after_the_budget(bus: Bus, start_balancer: StartBalancer) -> None:
    """Opening and at once resetting 500 streams with a budget of 20 resets a second ends that connection with
    GOAWAY ENHANCE_YOUR_CALM; the backend saw a bounded number of requests and another client is answered."""
    async with recording_backend() as recorder, start_balancer(listen_max_resets_per_s=20) as balancer:
        await announce(bus, balancer, "vm-a", recorder.address)
        attacker, bystander = await Client.connect(balancer.port), await Client.connect(balancer.port)
        try:
            for _ in range(500):
                stream_id = attacker.conn.get_next_available_stream_id()
                attacker.conn.send_headers(stream_id, GET, end_stream=True)
                attacker.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
            attacker.flush()
            code = await attacker.until_goaway()
            status = await bystander.get()
            reached = served(recorder)
        finally:
            attacker.close()
            bystander.close()
    assert code == ErrorCodes.ENHANCE_YOUR_CALM
    assert status == 200
    assert 1 <= reached <= 25, "the bystander's and at most the budget's worth of reset requests went upstream"


async def test_resets_within_the_budget_keep_the_connection(bus: Bus, start_balancer: StartBalancer) -> None:
    """A client that resets a few streams, within the budget, keeps its connection and is answered."""
    async with recording_backend() as recorder, start_balancer(listen_max_resets_per_s=20) as balancer:
        await announce(bus, balancer, "vm-a", recorder.address)
        client = await Client.connect(balancer.port)
        try:
            for _ in range(5):
                stream_id = client.conn.get_next_available_stream_id()
                client.conn.send_headers(stream_id, GET, end_stream=True)
                client.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
            status = await client.get()
        finally:
            client.close()
    assert status == 200
