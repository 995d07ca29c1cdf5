"""Header rules of a reverse proxy: drop hop-by-hop headers, add forwarding, `via` and request-id headers.

HTTP/3 carries lower-case names and pseudo-headers; HTTP/1.1 has a request line and `host`. Both
upstream protocols share these functions so the rules are the same whichever is configured.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from services.balancer.core.fields import TOKEN, valid_authority

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


FORWARDING = frozenset(
    {b"x-forwarded-for", b"forwarded", b"x-forwarded-proto", b"x-forwarded-host", b"x-real-ip", b"x-request-id"}
)
"""Request headers that make claims about the client or the request: only trusted peers may set them."""
REQUEST_ID = b"x-request-id"
SANE_ID = re.compile(rb"[\x21-\x7e]{1,200}")
"""A request id kept from a trusted proxy: visible ASCII, at most 200 bytes (log- and header-safe)."""


def forwarding(
    headers: Headers, client_ip: str, authority: bytes, via: bytes, proxies: TrustedProxies | None = None,
    *, fresh_id: bytes,
) -> Headers:
    """Add `x-forwarded-for`, `-proto`, `-host`, `x-real-ip`, `forwarded`, `via` and `x-request-id`.

    By default the client's own claims in these headers are dropped and replaced, so a client
    cannot pose as another address (an appended chain would keep whatever it made up). A peer
    in `proxies` (a proxy in front of us) keeps its chain, which the peer is appended to, its
    proto, host and real-ip, and a sane request id. `x-request-id` comes last, so `request_id_of`
    finds it at once. `fresh_id` is the id of a request that brings none we keep (the glue draws it).
    An `authority` that is not host[:port] is named nowhere (the request model refuses such requests;
    this keeps the rule where the header is built).
    """
    kept = [(n, v) for n, v in headers if n not in FORWARDING]
    authority = authority if valid_authority(authority) else b""
    here = forwarded_element(client_ip, authority)
    host = [(b"x-forwarded-host", authority)] if authority else []
    if proxies is None or client_ip not in proxies:
        peer = client_ip.encode()
        return [*kept, (b"x-forwarded-for", peer), (b"x-forwarded-proto", b"https"), *host, (b"x-real-ip", peer),
                (b"forwarded", here), (b"via", via), (REQUEST_ID, fresh_id)]
    claims = _claims(headers)
    chain = b", ".join([*claims.get(b"x-forwarded-for", []), client_ip.encode()])
    claimed_host = _first(claims, b"x-forwarded-host")
    if claimed_host is not None and valid_authority(claimed_host):
        host = [(b"x-forwarded-host", claimed_host)]
    return [
        *kept,
        (b"x-forwarded-for", chain),
        (b"x-forwarded-proto", _first(claims, b"x-forwarded-proto") or b"https"),
        *host,
        (b"x-real-ip", _first(claims, b"x-real-ip") or real_client(chain, proxies)),
        (b"forwarded", b", ".join([*claims.get(b"forwarded", []), here])),
        (b"via", via),
        (REQUEST_ID, _sane_id(_first(claims, REQUEST_ID)) or fresh_id),
    ]


def forwarded_element(client_ip: str, authority: bytes) -> bytes:
    """This hop's `forwarded` element (RFC 7239 §4): every value a token or an escaped quoted-string.

    An IPv6 node is bracketed and quoted (§6); the host is quoted and present only when it is a valid
    authority, so no byte of a client's `:authority` can end the element or add a `for=` of its own.
    """
    ip = client_ip.encode()
    node = ip if TOKEN.fullmatch(ip) else quoted(b"[" + ip + b"]" if b":" in ip else ip)
    element = b"for=" + node + b";proto=https"
    return element + b";host=" + quoted(authority) if authority and valid_authority(authority) else element


def quoted(value: bytes) -> bytes:
    """An RFC 7230 quoted-string of `value` (backslash and double quote escaped)."""
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _claims(headers: Headers) -> dict[bytes, list[bytes]]:
    """The forwarding headers a trusted peer sent, every value of each in order."""
    claims: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        if name in FORWARDING:
            claims.setdefault(name, []).append(value)
    return claims


def _first(claims: dict[bytes, list[bytes]], name: bytes) -> bytes | None:
    values = claims.get(name)
    return values[0].strip() if values and values[0].strip() else None


def real_client(chain: bytes, proxies: TrustedProxies) -> bytes:
    """The nearest hop of an `x-forwarded-for` chain that is not a trusted proxy (nginx's
    `real_ip_recursive`): entries left of it were written by a party we do not trust."""
    hops = [hop.strip() for hop in chain.split(b",") if hop.strip()]
    for hop in reversed(hops):
        if hop.decode(errors="replace") not in proxies:
            return hop
    return hops[0]


def _sane_id(value: bytes | None) -> bytes | None:
    return value if value is not None and SANE_ID.fullmatch(value) else None


def request_id_of(headers: Headers) -> bytes:
    """The `x-request-id` of a request block `forwarding` built (b"" when there is none)."""
    for name, value in reversed(headers):
        if name == REQUEST_ID:
            return value
    return b""


MAX_ADDRESS_CHARS = 45
"""The longest textual IP address (IPv4-mapped IPv6): longer strings are never parsed nor cached."""


class TrustedProxies:
    """The CIDRs whose connections may speak for the client (`BALANCER_TRUSTED_PROXIES`).

    Answers are cached per address (bounded), so a busy trusted proxy costs a dict lookup per
    request, not an address parse.
    """

    CACHE_SIZE = 4096

    def __init__(self, cidrs: Iterable[str] = ()) -> None:
        self.networks = tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip())
        self._known: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, ip: object) -> bool:
        if not self.networks or not isinstance(ip, str) or len(ip) > MAX_ADDRESS_CHARS:
            return False
        known = self._known.get(ip)
        if known is None:
            if len(self._known) >= self.CACHE_SIZE:
                self._known.clear()
            known = self._known[ip] = self._match(ip)
        return known

    def _match(self, ip: str) -> bool:
        """In a trusted network; an IPv4-mapped IPv6 peer (dual-stack socket) counts as its IPv4."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        return any(address in net or (mapped is not None and mapped in net) for net in self.networks)


def response_headers(
    status: int, headers: Iterable[tuple[bytes, bytes]], via: bytes, backend: bytes | None, request_id: bytes = b""
) -> Headers:
    """The HTTP/3 response header block for an upstream response, echoing the request id.

    The echo replaces any `x-request-id` of the backend, so the client sees exactly the id the
    balancer logged and sent upstream.
    """
    out = [(b":status", str(status).encode()), *end_to_end(headers), (b"via", via)]
    if backend is not None:
        out.append((b"x-quicfleet-backend", backend))
    if request_id:
        out = [h for h in out if h[0] != REQUEST_ID]
        out.append((REQUEST_ID, request_id))
    return out


def header_bytes(headers: Iterable[tuple[bytes, bytes]]) -> int:
    """Size of a header block as limits count it (name + value + 32 per field, like HPACK/QPACK)."""
    return sum(len(n) + len(v) + 32 for n, v in headers)
