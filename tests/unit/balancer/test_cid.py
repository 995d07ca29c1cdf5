"""The byte layouts the connection-ID learning program shares with user space, and the slot-map changes."""

from __future__ import annotations

import struct

import pytest

from services.balancer.core import cidmaps


def test_an_ipv4_address_is_keyed_as_v4_mapped_ipv6() -> None:
    """IPv4 keys are ::ffff:a.b.c.d, the form the program builds from an IPv4 header."""
    assert cidmaps.address_key("10.78.0.10") == bytes(10) + b"\xff\xff" + bytes([10, 78, 0, 10])


def test_an_ipv6_address_is_keyed_as_its_16_bytes() -> None:
    """IPv6 keys are the address's own bytes."""
    assert cidmaps.address_key("fd00::1") == b"\xfd" + bytes(14) + b"\x01"


def test_a_cid_key_is_zero_padded_to_twenty_bytes() -> None:
    """Every CID key has the program's fixed width, the CID first."""
    assert cidmaps.cid_key(b"\x01\x02\x03\x04") == b"\x01\x02\x03\x04" + bytes(16)
    assert len(cidmaps.cid_key(bytes(range(20)))) == cidmaps.CID_MAX


@pytest.mark.parametrize("cid", [b"", bytes(21)])
def test_a_cid_of_impossible_length_is_refused(cid: bytes) -> None:
    """QUIC v1 CIDs in a key have 1..20 bytes."""
    with pytest.raises(ValueError, match="connection ID"):
        cidmaps.cid_key(cid)


def test_the_config_value_matches_the_c_struct() -> None:
    """cid_len (u32), port (u32), then the 16-byte VIP: 24 bytes, as `struct qf_config`."""
    value = cidmaps.config_value(8, "10.77.0.10", 8443)
    assert len(value) == cidmaps.VALUE_SIZES["qf_config"]
    assert struct.unpack("<II", value[:8]) == (8, 8443)
    assert value[8:] == cidmaps.address_key("10.77.0.10")


@pytest.mark.parametrize("vip", [None, "0.0.0.0", "::"])
def test_a_config_without_vip_matches_any_address(vip: str | None) -> None:
    """No VIP (or a wildcard listen address) is sixteen zero bytes, which the program reads as any destination."""
    assert cidmaps.config_value(20, vip, 0)[8:] == bytes(16)


@pytest.mark.parametrize("length", [3, 21])
def test_a_cid_length_outside_four_to_twenty_is_refused(length: int) -> None:
    """The setting's range is the program's: 4 (quic-go) to 20 (nginx)."""
    with pytest.raises(ValueError, match="length"):
        cidmaps.config_value(length, None, 0)


def test_slot_changes_write_only_what_changed() -> None:
    """An unchanged VM is not rewritten; a moved one is; a removed one is deleted and its slot is gone."""
    changes = cidmaps.slot_changes({"10.0.0.1": 1, "10.0.0.2": 2, "10.0.0.3": 3}, {"10.0.0.1": 1, "10.0.0.2": 4})
    assert changes.upserts == {cidmaps.address_key("10.0.0.2"): 4}
    assert changes.deletes == (cidmaps.address_key("10.0.0.3"),)
    assert changes.gone == frozenset({2, 3})


@pytest.mark.parametrize("slot", [0, 0x10000])
def test_a_slot_outside_the_mark_range_is_refused(slot: int) -> None:
    """0 is "unmarked" and above 65535 is the hash's range, so neither can be a slot."""
    with pytest.raises(ValueError, match="slot"):
        cidmaps.slot_changes({}, {"10.0.0.1": slot})


def test_stale_cids_are_those_of_gone_slots() -> None:
    """Only CIDs pointing at a slot no VM holds are dropped; none when no slot went."""
    entries = [(b"a" * 20, cidmaps.u32(1)), (b"b" * 20, cidmaps.u32(2))]
    assert cidmaps.stale_cids(entries, frozenset({2})) == [b"b" * 20]
    assert cidmaps.stale_cids(entries, frozenset()) == []


def test_counters_and_slots_read_back_little_endian() -> None:
    """Values written as u32 read back the same; counters are u64."""
    assert cidmaps.read_u32(cidmaps.u32(65535)) == 65535
    assert cidmaps.read_u64(struct.pack("<Q", 2**40)) == 2**40
