"""The aioquic tuning helpers act on two QUIC cores wired back to back in memory."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from services.balancer.quictune import StreamCredit, ack_with_next_packet, set_ack_delay, stream_backlog
from shared.certs import make_self_signed

pytestmark = pytest.mark.unit

CLIENT = ("1.2.3.4", 1234)
SERVER = ("2.3.4.5", 4433)


def _pair(tmp_path: Path) -> tuple[QuicConnection, QuicConnection]:
    """A client and a server core that completed their handshake (no sockets: datagrams are handed over)."""
    make_self_signed(tmp_path / "c.pem", tmp_path / "k.pem")
    server_config = QuicConfiguration(is_client=False, alpn_protocols=["test"])
    server_config.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    client = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=["test"],
                                                            verify_mode=ssl.CERT_NONE))
    client.connect(SERVER, now=0.0)
    server = QuicConnection(configuration=server_config,
                            original_destination_connection_id=client.original_destination_connection_id)
    for step in range(8):
        _hand_over(client, server, CLIENT, step * 0.1)
        _hand_over(server, client, SERVER, step * 0.1)
    return client, server


def _hand_over(sender: QuicConnection, receiver: QuicConnection, source: tuple[str, int], now: float) -> int:
    datagrams = sender.datagrams_to_send(now=now)
    for data, _ in datagrams:
        receiver.receive_datagram(data, source, now=now)
    return len(datagrams)


def test_ack_is_delayed_by_default_and_sent_with_the_next_packet_when_hastened(tmp_path: Path) -> None:
    """After a request arrives aioquic holds its ACK; ack_with_next_packet makes it leave at once."""
    client, server = _pair(tmp_path)
    client.send_stream_data(0, b"GET", end_stream=True)
    _hand_over(client, server, CLIENT, 1.0)
    assert server.datagrams_to_send(now=1.0) == []
    ack_with_next_packet(server, now=1.0)
    assert len(server.datagrams_to_send(now=1.0)) == 1


def test_zero_ack_delay_acknowledges_immediately(tmp_path: Path) -> None:
    """With the ACK delay set to zero the server acknowledges a request without waiting."""
    client, server = _pair(tmp_path)
    assert set_ack_delay(server, 0.0)
    client.send_stream_data(0, b"GET", end_stream=True)
    _hand_over(client, server, CLIENT, 1.0)
    assert len(server.datagrams_to_send(now=1.0)) == 1


def test_stream_backlog_counts_unacknowledged_bytes(tmp_path: Path) -> None:
    """Bytes sent on a stream count as backlog until the peer acknowledges them."""
    client, server = _pair(tmp_path)
    client.send_stream_data(0, b"GET", end_stream=True)
    _hand_over(client, server, CLIENT, 1.0)
    server.send_stream_data(0, b"x" * 5000)
    assert stream_backlog(server, 0) == 5000
    for now in (1.0, 1.01, 1.02, 1.05, 1.1, 1.2):
        _hand_over(server, client, SERVER, now)
        _hand_over(client, server, CLIENT, now + 0.005)
    assert stream_backlog(server, 0) == 0
    assert stream_backlog(server, 404) == 0


def _exchange(client: QuicConnection, server: QuicConnection, start: float) -> None:
    """Pass datagrams both ways until both sides are quiet (simulated time, 10 ms a round)."""
    for step in range(400):
        sent = _hand_over(client, server, CLIENT, start + step * 0.01)
        if not _hand_over(server, client, SERVER, start + step * 0.01 + 0.005) and not sent:
            return


def _received(server: QuicConnection, stream_id: int) -> int:
    return server._streams[stream_id].receiver.highest_offset


def test_stream_credit_holds_an_upload_until_the_buffer_drains(tmp_path: Path) -> None:
    """A held stream gets no credit beyond its window while bytes are buffered, and more once they drain."""
    client, server = _pair(tmp_path)
    window = 1048576  # aioquic's default max_stream_data, the stream's initial credit
    client.send_stream_data(0, b"POST")
    _exchange(client, server, 1.0)
    credit = StreamCredit(server, window)
    assert credit.enabled
    credit.hold(0)
    client.send_stream_data(0, b"x" * (3 * window))
    _exchange(client, server, 10.0)
    assert _received(server, 0) == window
    assert not credit.update(0, buffered=window)
    _exchange(client, server, 20.0)
    assert _received(server, 0) == window
    assert credit.update(0, buffered=0)
    _exchange(client, server, 30.0)
    assert _received(server, 0) == 2 * window


def test_released_stream_gets_aiquics_own_credit_again(tmp_path: Path) -> None:
    """After release, aioquic's doubling credit applies again and the whole upload arrives."""
    client, server = _pair(tmp_path)
    client.send_stream_data(0, b"POST")
    _exchange(client, server, 1.0)
    credit = StreamCredit(server, 1048576)
    credit.hold(0)
    credit.release(0)
    client.send_stream_data(0, b"x" * (3 * 1048576))
    _exchange(client, server, 10.0)
    assert _received(server, 0) == 4 + 3 * 1048576
