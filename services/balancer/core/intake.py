"""A client's request header block into the request sent upstream, or the refusal to answer.

HTTP/3 streams and the TCP listener (HTTP/1.1 and HTTP/2) both arrive here with HTTP/3-style
headers (pseudo-headers first, lower-case names), so the size limit, the request model
(`core.request`), and the forwarding rules (trusted proxies, request id) are the same whichever
protocol and QUIC engine the client spoke. The HTTP/1.1 front removes its hop-by-hop fields
before it calls here, so a connection-specific field is malformed on every front alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.balancer.core.headers import HOP_BY_HOP, Headers, forwarding, header_bytes
from services.balancer.core.options import ProxyOptions
from services.balancer.core.request import parse
from services.balancer.core.upstream import UpstreamRequest


@dataclass(frozen=True, slots=True)
class Refusal:
    """The balancer's own answer to a request it will not forward, and why (a reason glue counts and logs)."""

    status: int
    body: bytes
    reason: str = ""


TOO_LARGE = Refusal(431, b"request header fields too large\n", "header_block_too_large")
BAD_REQUEST = Refusal(400, b"bad request\n", "bad_request")
NOT_FORWARDED = HOP_BY_HOP | {b"expect", b"content-length"}
"""Fields the upstream request never carries as sent: hop-by-hop ones, `expect` (answered here), and
`content-length` (the upstream frames the body from `UpstreamRequest.content_length`, a checked number)."""

_malformed: dict[str, Refusal] = {}


def malformed(reason: str) -> Refusal:
    """The 400 for a malformed request, one shared instance per reason."""
    refusal = _malformed.get(reason)
    if refusal is None:
        refusal = _malformed[reason] = Refusal(400, BAD_REQUEST.body, reason)
    return refusal


def intake(
    headers: Headers, has_body: bool, client_ip: str, options: ProxyOptions, max_header_bytes: int, fresh_id: bytes
) -> UpstreamRequest | Refusal:
    """The upstream request for a client's header block, or why it is refused (`fresh_id`: see `forwarding`)."""
    if header_bytes(headers) > max_header_bytes:
        return TOO_LARGE
    request = parse(headers, has_body)
    if isinstance(request, str):
        return malformed(request)
    fields = [(n, v) for n, v in request.fields if n not in NOT_FORWARDED]
    return UpstreamRequest(
        method=request.method, path=request.path, authority=request.authority,
        headers=forwarding(fields, client_ip, request.authority, options.via, options.trusted_proxies,
                           fresh_id=fresh_id),
        has_body=has_body, content_length=request.content_length,
    )
