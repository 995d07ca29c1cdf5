"""Each QUIC engine's tuning acts on two of its cores wired back to back in memory, or says it cannot."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from services.balancer.quic import ENGINES, Engine, load_engine
from shared.certs import make_self_signed

CLIENT = ("1.2.3.4", 1234)
SERVER = ("2.3.4.5", 4433)
WINDOW = 1048576


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Engine:
    """Every engine in turn."""
    return load_engine(request.param)


def _pair(engine: Engine, tmp_path: Path) -> tuple[Any, Any]:
    """A client and a server core that completed their handshake (no sockets: datagrams are handed over)."""
    make_self_signed(tmp_path / "c.pem", tmp_path / "k.pem")
    server_config = engine.QuicConfiguration(is_client=False, alpn_protocols=["test"], max_stream_data=WINDOW)
    server_config.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    client_config = engine.QuicConfiguration(is_client=True, alpn_protocols=["test"], verify_mode=ssl.CERT_NONE)
    client = engine.QuicConnection(configuration=client_config)
    client.connect(SERVER, now=0.0)
    server = engine.QuicConnection(configuration=server_config,
                                   original_destination_connection_id=client.original_destination_connection_id)
    for step in range(8):
        _hand_over(client, server, CLIENT, step * 0.1)
        _hand_over(server, client, SERVER, step * 0.1)
    return client, server


def _hand_over(sender: Any, receiver: Any, source: tuple[str, int], now: float) -> int:
    datagrams = sender.datagrams_to_send(now=now)
    for data, _ in datagrams:
        receiver.receive_datagram(data, source, now=now)
    return len(datagrams)


def _exchange(client: Any, server: Any, start: float) -> None:
    """Pass datagrams both ways until both sides are quiet (simulated time, 10 ms a round)."""
    for step in range(400):
        sent = _hand_over(client, server, CLIENT, start + step * 0.01)
        if not _hand_over(server, client, SERVER, start + step * 0.01 + 0.005) and not sent:
            return


def _received(engine: Engine, server: Any, stream_id: int) -> int:
    """Stream bytes the server core took in so far (from its events: works on every engine)."""
    total = 0
    while (event := server.next_event()) is not None:
        if getattr(event, "stream_id", None) == stream_id and hasattr(event, "data"):
            total += len(event.data)
    return total


def test_ack_is_delayed_and_sent_with_the_next_packet_when_hastened(engine: Engine, tmp_path: Path) -> None:
    """aioquic holds an ACK after a request; ack_with_next_packet makes it leave at once."""
    client, server = _pair(engine, tmp_path)
    client.send_stream_data(0, b"GET", end_stream=True)
    _hand_over(client, server, CLIENT, 1.0)
    if engine.name == "qh3":
        pytest.skip("qh3's core schedules its own ACKs: there is no delayed ACK to hasten")
    assert server.datagrams_to_send(now=1.0) == []
    engine.tuning.ack_with_next_packet(server, now=1.0)
    assert len(server.datagrams_to_send(now=1.0)) == 1


def test_zero_ack_delay_acknowledges_immediately_or_says_it_cannot(engine: Engine, tmp_path: Path) -> None:
    """With the ACK delay set to zero the server acknowledges at once; an engine that cannot set it says so."""
    client, server = _pair(engine, tmp_path)
    if not engine.tuning.set_ack_delay(server, 0.0):
        assert engine.name == "qh3"
        return
    client.send_stream_data(0, b"GET", end_stream=True)
    _hand_over(client, server, CLIENT, 1.0)
    assert len(server.datagrams_to_send(now=1.0)) == 1


def test_stream_backlog_counts_bytes_until_they_are_delivered(engine: Engine, tmp_path: Path) -> None:
    """Bytes written on a stream count as backlog, and none remain once the peer has them all."""
    client, server = _pair(engine, tmp_path)
    client.send_stream_data(0, b"GET", end_stream=True)
    _exchange(client, server, 1.0)
    server.send_stream_data(0, b"x" * 5000)
    assert engine.tuning.stream_backlog(server, 0) == 5000
    _exchange(client, server, 2.0)
    assert engine.tuning.stream_backlog(server, 0) == 0
    assert engine.tuning.stream_backlog(server, 404) == 0


def test_stream_credit_holds_an_upload_until_the_buffer_drains(engine: Engine, tmp_path: Path) -> None:
    """A held stream gets no credit beyond its window while bytes are buffered, and more once they drain."""
    client, server = _pair(engine, tmp_path)
    client.send_stream_data(0, b"POST")
    _exchange(client, server, 1.0)
    credit = engine.tuning.stream_credit(server, WINDOW)
    if not credit.enabled:
        assert engine.name == "qh3"
        pytest.skip("qh3's core grants stream credit itself: the exchange's hard body bound applies instead")
    _received(engine, server, 0)
    credit.hold(0)
    client.send_stream_data(0, b"x" * (3 * WINDOW))
    _exchange(client, server, 10.0)
    assert _received(engine, server, 0) == WINDOW - 4
    assert not credit.update(0, buffered=WINDOW)
    _exchange(client, server, 20.0)
    assert _received(engine, server, 0) == 0
    assert credit.update(0, buffered=0)
    _exchange(client, server, 30.0)
    assert _received(engine, server, 0) == WINDOW


def test_released_stream_gets_the_engines_own_credit_again(engine: Engine, tmp_path: Path) -> None:
    """After release (or with no held credit at all), the whole upload arrives."""
    client, server = _pair(engine, tmp_path)
    client.send_stream_data(0, b"POST")
    _exchange(client, server, 1.0)
    credit = engine.tuning.stream_credit(server, WINDOW)
    credit.hold(0)
    credit.release(0)
    client.send_stream_data(0, b"x" * (3 * WINDOW))
    _exchange(client, server, 10.0)
    assert _received(engine, server, 0) == 4 + 3 * WINDOW


def test_hardened_cores_handshake_through_padded_initials_and_carry_data(engine: Engine, tmp_path: Path) -> None:
    """With `harden` applied before the handshake (aioquic: PADDING skipped at once), padded Initials still
    complete it and stream data arrives whole."""
    make_self_signed(tmp_path / "c.pem", tmp_path / "k.pem")
    server_config = engine.QuicConfiguration(is_client=False, alpn_protocols=["test"])
    server_config.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    client = engine.QuicConnection(configuration=engine.QuicConfiguration(
        is_client=True, alpn_protocols=["test"], verify_mode=ssl.CERT_NONE))
    client.connect(SERVER, now=0.0)
    server = engine.QuicConnection(configuration=server_config,
                                   original_destination_connection_id=client.original_destination_connection_id)
    engine.tuning.harden(client)
    engine.tuning.harden(server)
    if engine.name == "aioquic":
        assert server._QuicConnection__frame_handlers[0x00][0].__name__ == "padding"
    _exchange(client, server, 0.0)
    client.send_stream_data(0, b"x" * 3000, end_stream=True)
    _exchange(client, server, 1.0)
    assert _received(engine, server, 0) == 3000
