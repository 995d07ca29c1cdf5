"""The steering rule for one datagram: handle it here, forward it to its owner, ask every sibling, or drop it.

Pure: the caller passes what it knows (the destination connection ID, whether this process
holds a connection for it, the live sibling slots, whether it is draining) and gets a decision.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from services.balancer.steering.cid import CID_LENGTH, Layout

Action = Literal["local", "forward", "broadcast", "drop"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a datagram; a forward names the slot and what to do if that slot is gone."""

    action: Action
    slot: int | None = None
    fallback: Action = "drop"


LOCAL = Decision("local")
BROADCAST = Decision("broadcast")
DROP = Decision("drop")


def destination_cid(datagram: bytes) -> tuple[bool, bytes] | None:
    """(long header?, destination connection ID) of a datagram's first packet, or None if it is too short.

    Short headers do not carry the ID's length: ours are `CID_LENGTH` long.
    """
    if not datagram:
        return None
    if datagram[0] & 0x80:
        if len(datagram) < 6 or datagram[5] > 20 or len(datagram) < 6 + datagram[5]:
            return None
        return True, datagram[6 : 6 + datagram[5]]
    if len(datagram) < 1 + CID_LENGTH:
        return None
    return False, datagram[1 : 1 + CID_LENGTH]


def decide(
    layout: Layout, me: int, dcid: bytes, long_header: bool, known: bool, live: Collection[int], draining: bool
) -> Decision:
    """Where a datagram for `dcid` goes.

    A connection this process holds stays here. An ID naming a sibling goes to it, even one not
    yet in `live` (a worker that just started); if that sibling is gone, a long header packet is
    handled here and a short one is asked of every sibling. A long header packet with an ID
    nobody claims is a new connection: here, or on a live sibling while draining (chosen by the
    ID, so every Initial of one connection picks the same one). A short header packet with an
    unknown ID may belong to a sibling whose engine issued an ID without the layout (qh3's core
    mints its own extra IDs): every sibling is asked, and each drops what it does not hold.
    """
    if known:
        return LOCAL
    owner = layout.owner(dcid)
    siblings = [s for s in live if s != me]
    if owner is not None and owner != me:
        return Decision("forward", owner, "local" if long_header else "broadcast")
    if long_header:
        if draining and siblings:
            return Decision("forward", rendezvous(dcid, siblings), "local")
        return LOCAL
    if owner == me or not siblings:
        return DROP
    return BROADCAST


def rendezvous(key: bytes, slots: Collection[int]) -> int:
    """The slot with the highest hash for `key`: only keys of a slot that joins or leaves move."""
    return max(slots, key=lambda slot: hashlib.blake2b(key + bytes((slot,)), digest_size=8).digest())
