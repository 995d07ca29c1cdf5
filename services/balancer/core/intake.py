"""A client's request header block into the request sent upstream, or the refusal to answer.

HTTP/3 streams and the TCP listener (HTTP/1.1 and HTTP/2) both arrive here with HTTP/3-style
headers (pseudo-headers first, lower-case names), so the size limit, the checks and the
forwarding rules (trusted proxies, request id) are the same whichever protocol the client spoke.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.balancer.core.headers import Headers, end_to_end, forwarding, header_bytes
from services.balancer.core.options import ProxyOptions
from services.balancer.core.upstream import UpstreamRequest


@dataclass(frozen=True, slots=True)
class Refusal:
    """The balancer's own answer to a request it will not forward."""

    status: int
    body: bytes


TOO_LARGE = Refusal(431, b"request header fields too large\n")
BAD_REQUEST = Refusal(400, b"bad request\n")


def intake(
    headers: Headers, has_body: bool, client_ip: str, options: ProxyOptions, max_header_bytes: int, fresh_id: bytes
) -> UpstreamRequest | Refusal:
    """The upstream request for a client's header block, or why it is refused (`fresh_id`: see `forwarding`)."""
    if header_bytes(headers) > max_header_bytes:
        return TOO_LARGE
    pseudo = {n: v for n, v in headers if n.startswith(b":")}
    method, path = pseudo.get(b":method"), pseudo.get(b":path")
    if not method or not path or method == b"CONNECT":
        return BAD_REQUEST
    authority = pseudo.get(b":authority", b"")
    fields = [(n, v) for n, v in end_to_end(headers) if n != b"expect"]
    return UpstreamRequest(
        method=method, path=path, authority=authority,
        headers=forwarding(fields, client_ip, authority, options.via, options.trusted_proxies, fresh_id=fresh_id),
        has_body=has_body,
    )
