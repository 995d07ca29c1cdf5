"""The byte layouts of the connection-ID learning program's maps (deploy/bpf/quic_cid.c), and what to change.

The tc program and user space meet only in four pinned BPF maps, so their keys and values are a
contract: it is written down here once, next to the C structs it mirrors, and kept pure so a unit
test can hold it without a kernel.

    qf_slots   key: the VM's address, 16 bytes (IPv4 as ::ffff:a.b.c.d)   value: slot (u32, little endian)
    qf_cids    key: the CID zero-padded to 20 bytes                        value: slot (u32)
    qf_config  key: 0 (u32)   value: cid_len (u32), port (u32), VIP (16 bytes; zero: any)
    qf_stats   key: 0 learned, 1 steered, 2 unknown (u32)                  value: count (u64)

A slot is the nftables mark the program sets, so it must fit the mark range nft reads as a slot.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

CID_MAX = 20
"""The longest connection ID QUIC v1 allows (RFC 9000 section 17.2), the program's key width."""
CID_MIN = 4
"""The shortest a server of ours uses (quic-go); shorter IDs would collide across connections."""
SLOT_MIN, SLOT_MAX = 1, 0xFFFF
"""Slots are marks nft reads as slots (1..65535); 0 means unmarked, above 65535 is the hash's range."""
STAT_LEARNED, STAT_STEERED, STAT_UNKNOWN = 0, 1, 2
MAP_NAMES = ("qf_cids", "qf_slots", "qf_config", "qf_stats")
KEY_SIZES = {"qf_cids": CID_MAX, "qf_slots": 16, "qf_config": 4, "qf_stats": 4}
VALUE_SIZES = {"qf_cids": 4, "qf_slots": 4, "qf_config": 24, "qf_stats": 8}


def check_cid_length(length: int) -> int:
    """`length` when a CID of that many bytes can be learned, else ValueError (a configuration error)."""
    if not CID_MIN <= length <= CID_MAX:
        raise ValueError(f"connection-ID length {length} is not in {CID_MIN}..{CID_MAX}")
    return length


def check_slot(slot: int) -> int:
    """`slot` when it can be a mark nft reads as a slot, else ValueError."""
    if not SLOT_MIN <= slot <= SLOT_MAX:
        raise ValueError(f"slot {slot} is not in {SLOT_MIN}..{SLOT_MAX}")
    return slot


def address_key(address: str) -> bytes:
    """The 16-byte key of an address: IPv6 as is, IPv4 mapped into ::ffff:0:0/96 (as the program parses it)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv4Address):
        return bytes(10) + b"\xff\xff" + ip.packed
    return ip.packed


def cid_key(cid: bytes) -> bytes:
    """The key of a connection ID in qf_cids: its bytes, zero-padded to CID_MAX."""
    if not 1 <= len(cid) <= CID_MAX:
        raise ValueError(f"a connection ID has 1..{CID_MAX} bytes, not {len(cid)}")
    return cid.ljust(CID_MAX, b"\0")


def u32(value: int) -> bytes:
    """A u32 key or value as the kernel stores it on a little-endian host (x86-64, arm64)."""
    return struct.pack("<I", value)


def read_u32(raw: bytes) -> int:
    """A u32 value read back from a map."""
    return int(struct.unpack("<I", raw[:4])[0])


def read_u64(raw: bytes) -> int:
    """A u64 value (a counter) read back from a map."""
    return int(struct.unpack("<Q", raw[:8])[0])


def config_value(cid_length: int, vip: str | None, port: int) -> bytes:
    """qf_config's one value: which packets the steering program reads, and how long their DCID is.

    No VIP, or an unspecified one (a balancer listening on 0.0.0.0 or ::), matches any destination."""
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} is not in 0..65535")
    where = address_key(vip) if vip and not ipaddress.ip_address(vip).is_unspecified else bytes(16)
    return struct.pack("<II16s", check_cid_length(cid_length), port, where)


@dataclass(frozen=True, slots=True)
class SlotChanges:
    """What to write into qf_slots (address key -> slot) and delete from it, and the slots now gone."""

    upserts: dict[bytes, int]
    deletes: tuple[bytes, ...]
    gone: frozenset[int]


def slot_changes(previous: Mapping[str, int], wanted: Mapping[str, int]) -> SlotChanges:
    """The smallest change of qf_slots from `previous` to `wanted` (VM address -> slot).

    `gone` are the slots no VM holds any more: the CIDs learned for them must go too, or a slot
    given later to a new VM would inherit connections that belong to nobody there.
    """
    for slot in wanted.values():
        check_slot(slot)
    upserts = {address_key(a): s for a, s in wanted.items() if previous.get(a) != s}
    deletes = tuple(address_key(a) for a in previous if a not in wanted)
    gone = frozenset(previous.values()) - frozenset(wanted.values())
    return SlotChanges(upserts, deletes, gone)


def stale_cids(entries: Iterable[tuple[bytes, bytes]], gone: frozenset[int]) -> list[bytes]:
    """The qf_cids keys (from `(key, value)` pairs) that point at a slot in `gone`."""
    return [key for key, value in entries if read_u32(value) in gone] if gone else []
