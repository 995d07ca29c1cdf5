"""Connection-ID steering's pure parts: the ID layout, the per-datagram rule, the sibling messages."""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.balancer.steering import peers
from services.balancer.steering.cid import CID_LENGTH, Layout, server_id
from services.balancer.steering.plan import BROADCAST, DROP, LOCAL, Decision, decide, destination_cid, rendezvous

slots = st.integers(0, 255)


@given(config=st.integers(0, 6), node=slots, slot=slots)
def test_minted_ids_name_their_owner(config: int, node: int, slot: int) -> None:
    """An ID minted for a slot decodes to that slot, and a QUIC-LB router reads config, node and slot from it."""
    layout = Layout(config, node)
    cid = layout.mint(slot)
    assert len(cid) == CID_LENGTH
    assert layout.owner(cid) == slot
    assert server_id(cid) == (config, node, slot)


def test_ids_of_another_node_or_config_are_not_ours() -> None:
    """An ID from another node, another config rotation or of another length names no local owner."""
    cid = Layout(0, 1).mint(5)
    assert Layout(0, 2).owner(cid) is None
    assert Layout(1, 1).owner(cid) is None
    assert Layout(0, 1).owner(cid + b"x") is None


def test_nonces_differ() -> None:
    """Two IDs for one slot differ (the nonce), so paths of one client cannot be linked by their IDs."""
    layout = Layout()
    assert len({layout.mint(3) for _ in range(100)}) == 100


def test_layout_rejects_out_of_range_fields() -> None:
    """Config 7 (unroutable) and node 256 are refused when the layout is made."""
    with pytest.raises(ValueError):
        Layout(7, 0)
    with pytest.raises(ValueError):
        Layout(0, 256)


def test_server_id_refuses_unroutable_and_mislabelled_ids() -> None:
    """A router reads nothing from config 7 or from an ID whose length bits do not match its length."""
    assert server_id(bytes((0xE7, 1, 2, 0, 0, 0, 0, 0))) is None
    assert server_id(bytes((0x05, 1, 2, 0, 0, 0, 0, 0))) is None


def test_destination_cid_of_short_and_long_headers() -> None:
    """The destination ID is read from a short header (fixed length) and a long one (its length byte)."""
    cid = Layout().mint(9)
    assert destination_cid(bytes((0x40,)) + cid + b"payload") == (False, cid)
    long = bytes((0xC0, 0, 0, 0, 1, 12)) + b"A" * 12 + b"rest"
    assert destination_cid(long) == (True, b"A" * 12)
    assert destination_cid(b"") is None
    assert destination_cid(bytes((0x40, 1, 2))) is None
    assert destination_cid(bytes((0xC0, 0, 0, 0, 1, 30)) + b"x" * 40) is None


LAYOUT = Layout()


def test_known_connections_stay_local() -> None:
    """A datagram for a connection this process holds is handled here, whoever the ID names."""
    assert decide(LAYOUT, 1, LAYOUT.mint(2), False, True, {1, 2}, False) == LOCAL


def test_ids_of_a_sibling_are_forwarded_even_before_it_is_seen() -> None:
    """An ID naming another slot goes to it (a just-started worker included), with a fallback by header kind."""
    assert decide(LAYOUT, 1, LAYOUT.mint(2), False, False, {1}, False) == Decision("forward", 2, "broadcast")
    assert decide(LAYOUT, 1, LAYOUT.mint(2), True, False, {1, 2}, False) == Decision("forward", 2, "local")


def test_new_connections_stay_unless_draining() -> None:
    """An unclaimed long-header ID is a new connection: here, or on a sibling while this process drains."""
    initial = b"client-chosen-id"
    assert decide(LAYOUT, 1, initial, True, False, {1, 2, 3}, False) == LOCAL
    draining = decide(LAYOUT, 1, initial, True, False, {1, 2, 3}, True)
    assert draining.action == "forward" and draining.slot in {2, 3}
    assert decide(LAYOUT, 1, initial, True, False, {1}, True) == LOCAL, "the last one serves rather than drops"


def test_unknown_short_header_ids_are_asked_of_siblings_or_dropped() -> None:
    """A foreign-layout short-header ID is broadcast to siblings; one naming this process (gone) is dropped."""
    assert decide(LAYOUT, 1, b"\xff" * CID_LENGTH, False, False, {1, 2}, False) == BROADCAST
    assert decide(LAYOUT, 1, b"\xff" * CID_LENGTH, False, False, {1}, False) == DROP
    assert decide(LAYOUT, 1, LAYOUT.mint(1), False, False, {1, 2}, False) == DROP


@given(key=st.binary(min_size=1, max_size=20))
def test_rendezvous_moves_only_keys_of_a_removed_slot(key: bytes) -> None:
    """Removing a slot moves only the keys it had; the rest keep their slot."""
    before = rendezvous(key, {2, 3, 4})
    after = rendezvous(key, {2, 3})
    assert after == before or before == 4


@given(
    ip=st.ip_addresses(), port=st.integers(0, 65535), data=st.binary(max_size=1500),
    kind=st.sampled_from([peers.FORWARD, peers.BROADCAST]),
)
def test_sibling_messages_round_trip(ip: object, port: int, data: bytes, kind: int) -> None:
    """A datagram and its client address (IPv4 or IPv6) survive the trip to a sibling, written as the
    socket module writes addresses it receives (inet_ntop), so the owner sees the address it would
    have seen directly."""
    text = str(ip)
    if ":" in text:
        text = socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, text))
    addr: tuple[object, ...] = (text, port) if ":" not in text else (text, port, 0, 0)
    assert peers.decode(peers.encode(kind, addr, data)) == (kind, addr, data)


def test_malformed_sibling_messages_are_refused() -> None:
    """Short or unknown-family messages decode to None rather than raising."""
    assert peers.decode(b"\x01\x04") is None
    assert peers.decode(b"\x01\x09\x00\x01" + b"x" * 30) is None


def test_live_slots_are_read_from_the_unix_socket_table() -> None:
    """Only this port's and node's sockets in the slot directory count as live slots."""
    table = "\n".join([
        "Num RefCount Protocol Flags Type St Inode Path",
        "0: 00000002 00000000 00000000 0002 01 1 /run/q s/8443.0.1",
        "0: 00000002 00000000 00000000 0002 01 2 /run/q s/8443.0.17",
        "0: 00000002 00000000 00000000 0002 01 3 /run/q s/8443.1.2",
        "0: 00000002 00000000 00000000 0002 01 4 /run/q s/84430.0.3",
        "0: 00000002 00000000 00000000 0002 01 5 /run/other/8443.0.4",
        "0: 00000002 00000000 00000000 0002 01 6 @/run/q s/8443.0.5",
        "0: 00000002 00000000 00000000 0002 01 7",
    ])
    assert peers.live_slots(Path("/run/q s"), 8443, 0, lambda: table) == {1, 17}


def test_claims_take_distinct_slots_and_free_them_on_close() -> None:
    """Two claims on one port get different slots; a released claim's slot is free again and no longer live."""
    where = peers.private_directory(Path(tempfile.mkdtemp(prefix="qf-")) / "s")
    port = 1
    first, slot_a = peers.claim(where, port, 200)
    second, slot_b = peers.claim(where, port, 200)
    try:
        assert slot_a != slot_b
        assert {slot_a, slot_b} <= peers.live_slots(where, port, 200)
        peers.release(where / peers.name_of(port, 200, slot_a))
        first.close()
        assert slot_a not in peers.live_slots(where, port, 200)
        third, slot_c = peers.claim(where, port, 200)
        third.close()
        assert slot_c == slot_a
    finally:
        second.close()
        shutil.rmtree(where.parent)
