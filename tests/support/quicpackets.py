"""Hand-made QUIC packet headers, and a one-shot UDP send from inside a namespace.

The connection-ID learning tests feed the tc program exactly the bytes it parses: a long header
(as a server's handshake packet starts) naming a SCID, and a short header naming a DCID. Only the
headers matter to the program, so the rest is filler.
"""

from __future__ import annotations

import sys
from typing import Any

QUIC_V1 = b"\x00\x00\x00\x01"
_SEND = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.sendto(bytes.fromhex(sys.argv[3]), (sys.argv[1], int(sys.argv[2])))\n"
)


def long_header(scid: bytes, dcid: bytes = b"\x11" * 8, version: bytes = QUIC_V1) -> bytes:
    """An Initial-like long-header packet: form and fixed bits, version, DCID, SCID, then filler."""
    return bytes([0xC0]) + version + bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid + b"\0" * 64


def short_header(dcid: bytes) -> bytes:
    """A 1-RTT short-header packet carrying `dcid` (the program knows its length), then filler."""
    return bytes([0x40]) + dcid + b"\x55" * 64


def send_from(net: Any, ns: str, host: str, port: int, payload: bytes) -> None:
    """Send one UDP datagram from namespace `ns` of an L4Net (tests/support/l4net.py) to host:port."""
    net.run_in(ns, [sys.executable, "-c", _SEND, host, str(port), payload.hex()])
