"""A QPACK field section's decoded size is bounded from its encoded bytes, before any decoding."""

from __future__ import annotations

import pylsqpack
from hypothesis import given, settings
from hypothesis import strategies as st

from services.balancer.core.fieldsize import STATIC_FIELD, STATIC_NAME, TableMirror, prefixed_int, section_size

CAPACITY = 4096


def _size(headers: list[tuple[bytes, bytes]]) -> int:
    return sum(len(n) + len(v) + 32 for n, v in headers)


def _indexed_static(index: int) -> bytes:
    """An Indexed Field Line naming static entry `index` (6-bit prefix, T=1)."""
    if index < 63:
        return bytes([0xC0 | index])
    return bytes([0xFF, index - 63])


def test_the_static_table_lengths_match_the_decoders_table() -> None:
    """Each static entry's name and value lengths are those pylsqpack decodes for its index."""
    block = b"\x00\x00" + b"".join(_indexed_static(i) for i in range(len(STATIC_FIELD)))
    _, headers = pylsqpack.Decoder(CAPACITY, 0).feed_header(0, block)
    assert [len(n) for n, _ in headers] == list(STATIC_NAME)
    assert [len(n) + len(v) for n, v in headers] == list(STATIC_FIELD)


def test_a_bomb_is_counted_past_the_limit_after_a_few_field_lines() -> None:
    """16,000 references to one 3,000-byte entry count as over a 16 KiB limit, from the mirror of the insert."""
    table = TableMirror(CAPACITY)
    table.feed(b"\x3f\xe1\x1f")  # Set Dynamic Table Capacity 4096
    table.feed(b"\x46x-bomb\x7f\xb9\x16" + b"v" * 3000)  # Insert With Literal Name, value of 3,000 bytes
    assert table.inserted == 1 and table.entries[0] == (6, 3000)
    block = b"\x02\x00" + b"\x80" * 16_000
    size = section_size(block, table, 16_384)
    assert 16_384 < size < 16_384 + 2 * 3100


def test_an_unknown_entry_counts_as_large_as_the_table_allows() -> None:
    """A reference the mirror cannot resolve is bounded by the capacity, never counted as small."""
    table = TableMirror(CAPACITY)
    assert section_size(b"\x02\x00" + b"\x80" * 10, table, 16_384) > 16_384


def test_a_small_section_is_not_read_at_all() -> None:
    """A section too short to reach the limit even at the largest entry is passed without reading it."""
    assert section_size(b"\x00\x00\xd1\xd7", TableMirror(CAPACITY), 16_384) == 0


def test_an_integer_split_over_bytes_is_read_whole() -> None:
    """A prefixed integer past its prefix continues in 7-bit groups (RFC 7541 section 5.1)."""
    assert prefixed_int(b"\x1f\x9a\x0a", 0, 5) == (1337, 3)


fields = st.lists(
    st.tuples(st.sampled_from([b"user-agent", b"cookie", b"x-a", b"accept", b"x-long-name-here"]),
              st.binary(min_size=0, max_size=300)),
    min_size=1, max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(st.lists(fields, min_size=1, max_size=4))
def test_a_section_over_any_limit_is_always_reported_over_it(requests: list[list[tuple[bytes, bytes]]]) -> None:
    """Whatever a real encoder makes of requests (dynamic table, Huffman, acknowledged entries), a section whose
    decoded size is over a limit is counted over that limit: the bound never lets a large section through."""
    encoder, decoder, table = pylsqpack.Encoder(), pylsqpack.Decoder(CAPACITY, 16), TableMirror(CAPACITY)
    table.feed(encoder.apply_settings(CAPACITY, 16))
    for stream_id, headers in enumerate(requests):
        inserts, block = encoder.encode(stream_id * 4, [(b":path", b"/"), *headers])
        decoder.feed_encoder(inserts)
        table.feed(inserts)
        acknowledgment, decoded = decoder.feed_header(stream_id * 4, block)
        encoder.feed_decoder(acknowledgment)
        for limit in (_size(decoded) - 1, _size(decoded) // 2, 0):
            assert section_size(block, table, limit) > limit
