"""Malformed QUIC datagrams: random bytes, truncated and mutated Initials, bad versions, bogus and replayed tokens.

Valid Initials come from aioquic's client state machine (no socket); a real Retry token is taken
from the balancer once, then replayed from other source addresses (so it never validates).
"""

from __future__ import annotations

import random
import socket
import ssl
import time

from aioquic._buffer import Buffer
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicPacketType, pull_quic_header

KINDS = ("random", "long-header random", "truncated Initial", "bad version", "mutated Initial", "bogus token",
         "replayed Retry token")


def initial(port: int, token: bytes = b"") -> bytes:
    """A client's first datagram (a valid Initial of 1200+ bytes), as aioquic would send it to `port`."""
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE, token=token)
    connection = QuicConnection(configuration=config)
    connection.connect(("127.0.0.1", port), now=time.time())
    return connection.datagrams_to_send(now=time.time())[0][0]


def retry_token(port: int) -> bytes:
    """The token of a real Retry the balancer (with quic_retry=always) sends for a fresh Initial."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(initial(port), ("127.0.0.1", port))
        data = sock.recv(65_536)
    header = pull_quic_header(Buffer(data=data), host_cid_length=8)
    assert header.packet_type == QuicPacketType.RETRY and header.token
    return header.token


class Garbage:
    """Makes datagrams of each kind in turn, from one captured Initial and one real Retry token."""

    def __init__(self, port: int, token: bytes, rng: random.Random) -> None:
        self.port, self.token, self.rng = port, token, rng
        self.captured = initial(port)
        self.replays = [initial(port, token) for _ in range(20)]
        self.bogus = [initial(port, rng.randbytes(rng.randrange(1, 200))) for _ in range(20)]
        self.sent = dict.fromkeys(KINDS, 0)
        self._makers = dict(zip(KINDS, (self._random, self._long_header, self._truncated, self._bad_version,
                                        self._mutated, self._bogus_token, self._replayed), strict=True))

    def make(self, i: int) -> bytes:
        """The `i`th datagram (the kinds take turns)."""
        kind = KINDS[i % len(KINDS)]
        self.sent[kind] += 1
        return self._makers[kind]()

    def _random(self) -> bytes:
        return self.rng.randbytes(self.rng.choice([1, 7, 30, 600, 1200, 1350, 1500]))

    def _long_header(self) -> bytes:
        return bytes([0xC0 | self.rng.randrange(64)]) + self.rng.randbytes(1250)

    def _truncated(self) -> bytes:
        return self.captured[: self.rng.randrange(1, len(self.captured))]

    def _bad_version(self) -> bytes:
        version = self.rng.choice([b"\x00\x00\x00\x00", b"\x0a\x0a\x0a\x0a", self.rng.randbytes(4)])
        return self.captured[:1] + version + self.captured[5:]

    def _mutated(self) -> bytes:
        data = bytearray(self.captured)
        for _ in range(self.rng.randrange(1, 9)):
            data[self.rng.randrange(len(data))] = self.rng.randrange(256)
        return bytes(data)

    def _bogus_token(self) -> bytes:
        return self.rng.choice(self.bogus)

    def _replayed(self) -> bytes:
        return self.rng.choice(self.replays)
