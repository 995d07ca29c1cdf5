"""Connection IDs that name their owner: a QUIC-LB style plaintext layout (draft-ietf-quic-load-balancers).

    byte 0          bytes 1-2                  bytes 3..7
    +-+-+-+-+-+-+-+-+---------------+---------------+-----------------------------+
    |config |length |  node (8 bit) |  slot (8 bit) |  nonce (random, 5 bytes)    |
    |(3 bit)|(5 bit)|   server id (16 bits)         |                             |
    +-------+-------+-------------------------------+-----------------------------+

The first octet is QUIC-LB's: three config-rotation bits (0-6; 7 means "unroutable") and the
CID length minus one, so a router can check the layout before it trusts the server id. The
server id is `node` (one per host: what an ECMP/anycast QUIC-LB router in front maps to a
machine) then `slot` (one per process on that host: what the processes themselves use). The
nonce keeps IDs unguessable and unlinkable across a client's paths (RFC 9000 section 9.5).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CID_LENGTH = 8
"""aioquic's and qh3's connection-ID length (both parse short headers with a fixed length)."""
NONCE_LENGTH = CID_LENGTH - 3
UNROUTABLE = 7


@dataclass(frozen=True, slots=True)
class Layout:
    """What this host's balancers share: the encoding (config rotation, node id) and where they meet
    (`directory`, the private directory of their slot sockets; None: the user's default, see `peers`)."""

    config_id: int = 0
    node: int = 0
    directory: Path | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.config_id < UNROUTABLE:
            raise ValueError(f"config id {self.config_id} is not in 0..6")
        if not 0 <= self.node <= 255:
            raise ValueError(f"node {self.node} is not in 0..255")

    @property
    def first_octet(self) -> int:
        return (self.config_id << 5) | (CID_LENGTH - 1)

    def mint(self, slot: int, nonce: Callable[[int], bytes] = os.urandom) -> bytes:
        """A fresh connection ID owned by `slot` on this node."""
        if not 0 <= slot <= 255:
            raise ValueError(f"slot {slot} is not in 0..255")
        return bytes((self.first_octet, self.node, slot)) + nonce(NONCE_LENGTH)

    def owner(self, cid: bytes) -> int | None:
        """The slot a connection ID names on this node, or None when it is not one of ours."""
        if len(cid) != CID_LENGTH or cid[0] != self.first_octet or cid[1] != self.node:
            return None
        return cid[2]


def server_id(cid: bytes) -> tuple[int, int, int] | None:
    """(config id, node, slot) of any ID in this layout, as a QUIC-LB router would read it."""
    if len(cid) < 3 or (cid[0] & 0x1F) + 1 != len(cid) or cid[0] >> 5 == UNROUTABLE:
        return None
    return cid[0] >> 5, cid[1], cid[2]
