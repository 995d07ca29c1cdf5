"""How large a QPACK field section decodes to, read from its encoded bytes before anything is decoded.

QPACK (RFC 9204) lets one byte of a HEADERS frame stand for a whole dynamic-table entry, so a 32 KB
frame that names one 3,000-byte entry 30,000 times decodes to 91 MB: a decompression bomb. aioquic's
decoder (pylsqpack) has no size limit, and a limit checked on the decoded list comes too late. So the
balancer keeps a mirror of the client's dynamic table - the size of each entry, not its bytes - from
the encoder stream, and adds up a field section's decoded size (RFC 9114 section 4.2.2: name + value
+ 32 per field) from its field lines, stopping once it passes the limit. The section is decoded only
when it fits.

The sum is an upper bound, never an underestimate: a Huffman string counts 8/5 of its length (the
shortest code is 5 bits), and an entry the mirror does not know counts as large as the table allows.
The decoder still judges what is malformed; this module only says "too large". Pure: bytes in,
numbers out.
"""

from __future__ import annotations

FIELD_OVERHEAD = 32
"""Bytes counted per field on top of its name and value (RFC 9114 section 4.2.2, RFC 9204 section 3.2.1)."""

STATIC_NAME = (
    10, 5, 3, 19, 14, 6, 4, 4, 17, 13, 13, 4, 8, 7, 10, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 15, 13,
    28, 28, 27, 13, 13, 13, 13, 13, 13, 16, 16, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 5, 25, 25, 25, 4, 4,
    22, 16, 7, 7, 7, 7, 7, 7, 7, 7, 7, 15, 32, 32, 28, 28, 28, 28, 29, 30, 29, 29, 7, 13, 23, 10, 9, 9, 8, 6, 7,
    6, 19, 25, 10, 15, 15, 15,
)
"""Name length of each QPACK static-table entry (RFC 9204 Appendix A, indexes 0-98)."""

STATIC_FIELD = (
    10, 6, 4, 19, 15, 6, 4, 4, 17, 13, 13, 4, 8, 7, 10, 14, 13, 10, 11, 14, 11, 10, 11, 12, 10, 10, 10, 10, 10, 9,
    29, 32, 18, 41, 40, 28, 22, 28, 27, 21, 21, 37, 18, 20, 35, 34, 28, 45, 21, 22, 21, 20, 36, 22, 36, 13, 41,
    60, 69, 19, 10, 29, 29, 10, 10, 10, 10, 10, 10, 10, 10, 10, 15, 37, 36, 29, 31, 46, 35, 43, 42, 32, 33, 12,
    13, 76, 11, 9, 9, 8, 6, 15, 6, 20, 26, 10, 15, 19, 25,
)
"""Name plus value length of each static-table entry (RFC 9204 Appendix A)."""

LARGEST_STATIC = max(STATIC_FIELD)


class Incomplete(Exception):
    """The bytes end inside an instruction or field line."""


def prefixed_int(data: bytes, pos: int, bits: int) -> tuple[int, int]:
    """An integer with an N-bit prefix (RFC 7541 section 5.1) at `pos`; returns it and the next position."""
    if pos >= len(data):
        raise Incomplete
    mask = (1 << bits) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        if pos >= len(data):
            raise Incomplete
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 62:
            raise ValueError("QPACK integer too large")


def string_bound(data: bytes, pos: int, bits: int) -> tuple[int, int]:
    """The decoded length bound of a string literal whose length has a `bits`-bit prefix (its Huffman
    flag is the bit above); returns the bound and the position after the string."""
    if pos >= len(data):
        raise Incomplete
    huffman = data[pos] & (1 << bits)
    length, pos = prefixed_int(data, pos, bits)
    if pos + length > len(data):
        raise Incomplete
    return (length * 8 // 5 if huffman else length), pos + length


class TableMirror:
    """The sizes of the entries in a peer's QPACK dynamic table, learnt from its encoder stream."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        """The table capacity the balancer advertised: no entry is larger, and it fixes the index space."""
        self.max_entries = capacity // FIELD_OVERHEAD
        self.inserted = 0
        self.entries: dict[int, tuple[int, int]] = {}
        """Name and value length bound by absolute index, for the last `max_entries` inserts (older ones
        must have been evicted: a reference to them is the decoder's error)."""
        self.largest = 0
        """The largest name + value inserted so far (never lowered: it only lets small sections skip the count)."""
        self.broken = False
        """The encoder stream could not be read (the decoder fails the connection on it): every entry is unknown."""
        self._pending = b""

    def feed(self, data: bytes) -> None:
        """Take the next bytes of the encoder stream (instructions may be split anywhere)."""
        if self.broken:
            return
        buf = self._pending + data
        pos = 0
        try:
            while pos < len(buf):
                pos = self._instruction(buf, pos)
        except Incomplete:
            pass
        except (ValueError, IndexError):
            self.broken = True
        self._pending = buf[pos:]
        if len(self._pending) > 4 * self.capacity + 64:  # no instruction this long inserts a valid entry
            self.broken = True

    def _instruction(self, buf: bytes, pos: int) -> int:
        """Read one encoder instruction at `pos` (RFC 9204 section 4.3); returns the next position."""
        first = buf[pos]
        if first & 0x80:  # Insert with Name Reference
            index, pos = prefixed_int(buf, pos, 6)
            value, pos = string_bound(buf, pos, 7)
            name = STATIC_NAME[index] if first & 0x40 else self.name(self.inserted - 1 - index)
        elif first & 0x40:  # Insert with Literal Name
            name, pos = string_bound(buf, pos, 5)
            value, pos = string_bound(buf, pos, 7)
        elif first & 0x20:  # Set Dynamic Table Capacity: sizes are bounded by ours anyway
            return prefixed_int(buf, pos, 5)[1]
        else:  # Duplicate
            index, pos = prefixed_int(buf, pos, 5)
            name, value = self._entry(self.inserted - 1 - index)
        self._insert(name, value)
        return pos

    def _insert(self, name: int, value: int) -> None:
        self.entries[self.inserted] = (name, value)
        self.entries.pop(self.inserted - self.max_entries, None)
        self.inserted += 1
        self.largest = max(self.largest, name + value)

    def _entry(self, index: int) -> tuple[int, int]:
        entry = None if self.broken else self.entries.get(index)
        return entry if entry is not None else (self.capacity, self.capacity)

    def name(self, index: int) -> int:
        """The name length bound of the entry at absolute `index` (the capacity when unknown)."""
        return self._entry(index)[0]

    def field(self, index: int) -> int:
        """The name + value length bound of the entry at absolute `index` (the capacity when unknown)."""
        name, value = self._entry(index)
        return min(name + value, self.capacity)

    def per_byte(self) -> int:
        """The most one byte of a field section can decode to (a field line is at least one byte)."""
        largest = self.capacity if self.broken else max(self.largest, LARGEST_STATIC)
        return largest + FIELD_OVERHEAD

    def required_insert_count(self, encoded: int) -> int:
        """The Required Insert Count of a field section from its encoded form (RFC 9204 section 4.5.1.1);
        0 where the encoding is invalid (the decoder rejects it)."""
        full_range = 2 * self.max_entries
        if encoded == 0 or full_range == 0 or encoded > full_range:
            return 0
        max_value = self.inserted + self.max_entries
        count = (max_value // full_range) * full_range + encoded - 1
        if count > max_value:
            count -= full_range
        return max(count, 0)


def section_size(block: bytes, table: TableMirror, limit: int) -> int:
    """An upper bound of the decoded size of the field section `block`, counted until it passes `limit`.

    A result at or under `limit` means the section decodes to at most `limit`; sections too short to
    reach it even at their largest are not read at all (0). A section the decoder would reject as
    malformed counts what was read up to the fault (the decoder decodes no further).
    """
    try:
        encoded, pos = prefixed_int(block, 0, 8)
        count = table.required_insert_count(encoded)
        negative = pos < len(block) and block[pos] & 0x80
        delta, pos = prefixed_int(block, pos, 7)
    except (Incomplete, ValueError):
        return 0
    per_byte = table.per_byte() if count <= table.inserted else table.capacity + FIELD_OVERHEAD
    if len(block) * per_byte <= limit:
        return 0
    base = count - delta - 1 if negative else count + delta
    total = 0
    try:
        while pos < len(block) and total <= limit:
            size, pos = _field_line(block, pos, base, table)
            total += size + FIELD_OVERHEAD
    except (Incomplete, ValueError, IndexError):
        pass
    return total


def _field_line(block: bytes, pos: int, base: int, table: TableMirror) -> tuple[int, int]:
    """The decoded name + value bound of the field line at `pos` (RFC 9204 section 4.5.2-4.5.6)."""
    first = block[pos]
    if first & 0x80:  # Indexed Field Line
        index, pos = prefixed_int(block, pos, 6)
        return (STATIC_FIELD[index] if first & 0x40 else table.field(base - 1 - index)), pos
    if first & 0x40:  # Literal Field Line with Name Reference
        index, pos = prefixed_int(block, pos, 4)
        name = STATIC_NAME[index] if first & 0x10 else table.name(base - 1 - index)
    elif first & 0x20:  # Literal Field Line with Literal Name
        name, pos = string_bound(block, pos, 3)
    elif first & 0x10:  # Indexed Field Line with Post-Base Index
        index, pos = prefixed_int(block, pos, 4)
        return table.field(base + index), pos
    else:  # Literal Field Line with Post-Base Name Reference
        index, pos = prefixed_int(block, pos, 3)
        name = table.name(base + index)
    value, pos = string_bound(block, pos, 7)
    return name + value, pos
