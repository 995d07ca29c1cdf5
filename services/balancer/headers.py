"""Header rules of a reverse proxy: drop hop-by-hop headers, add forwarding and `via` headers.

HTTP/3 carries lower-case names and pseudo-headers; HTTP/1.1 has a request line and `host`. Both
upstream protocols share these functions so the rules are the same whichever is configured.
"""

from __future__ import annotations

from collections.abc import Iterable

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
        b"te", b"trailer", b"proxy-authenticate", b"proxy-authorization", b"host",
    }
)
"""Headers that describe one connection, never forwarded (RFC 9110 section 7.6.1)."""


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names listed in `connection` (also hop-by-hop)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return frozenset(tokens)


def end_to_end(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """Headers with the hop-by-hop and pseudo ones removed, names lower-cased."""
    items = [(n.lower(), v) for n, v in headers]
    extra = connection_tokens(items)
    return [(n, v) for n, v in items if not n.startswith(b":") and n not in HOP_BY_HOP and n not in extra]


def forwarding(headers: Headers, client_ip: str, authority: bytes, via: bytes) -> Headers:
    """Append the client to `x-forwarded-for` and add `forwarded`, `x-forwarded-proto` and `via`."""
    previous = [v for n, v in headers if n == b"x-forwarded-for"]
    kept = [(n, v) for n, v in headers if n not in (b"x-forwarded-for", b"x-forwarded-proto")]
    chain = b", ".join([*previous, client_ip.encode()])
    node = f'"[{client_ip}]"' if ":" in client_ip else client_ip
    forwarded = f"for={node};proto=https".encode() + (b';host="' + authority + b'"' if authority else b"")
    return [
        *kept,
        (b"x-forwarded-for", chain),
        (b"x-forwarded-proto", b"https"),
        (b"forwarded", forwarded),
        (b"via", via),
    ]


def response_headers(status: int, headers: Iterable[tuple[bytes, bytes]], via: bytes, backend: bytes | None) -> Headers:
    """The HTTP/3 response header block for an upstream response."""
    out = [(b":status", str(status).encode()), *end_to_end(headers), (b"via", via)]
    if backend is not None:
        out.append((b"x-quicfleet-backend", backend))
    return out


def header_bytes(headers: Iterable[tuple[bytes, bytes]]) -> int:
    """Size of a header block as limits count it (name + value + 32 per field, like HPACK/QPACK)."""
    return sum(len(n) + len(v) + 32 for n, v in headers)
