"""Message framing at the back of the balancer: how a request body is framed upstream, and which
response heads from VMs are refused.

The balancer decides the upstream framing itself, from the length the client declared (parsed
once at intake into `UpstreamRequest.content_length`), never from a `content-length` or
`transfer-encoding` header it would forward: a smuggled second length or a coding the client
slipped past one front can then never reach a VM that reads the message differently
(RFC 9112 §6.3, RFC 9110 §8.6). Responses are held to the same field grammar as requests
(`core.fields`), so a VM cannot split a header line or frame a body two ways for the client.
"""

from __future__ import annotations

from services.balancer.core.fields import ANY_CASE_NAMES, NAMES, VALUES, all_match
from services.balancer.core.headers import Headers
from services.balancer.core.upstream import UpstreamRequest

FRAMING = frozenset({b"content-length", b"transfer-encoding"})
"""Fields that frame a message: dropped from forwarded requests and regenerated."""
CHUNKED = (b"transfer-encoding", b"chunked")


def without_framing(headers: Headers) -> Headers:
    """The fields minus any `content-length` or `transfer-encoding`, whatever their case (the request model
    already dropped them; this stands behind it for any other caller of the upstream)."""
    return [(n, v) for n, v in headers if n.lower() not in FRAMING]


def length_field(request: UpstreamRequest) -> Headers:
    """The one canonical `content-length` of a request whose length is known, else nothing."""
    if request.content_length is None:
        return []
    return [(b"content-length", str(request.content_length).encode())]


def chunked(request: UpstreamRequest) -> bool:
    """Whether an HTTP/1.1 upstream gets the body chunked: a body of unknown length (never with a length)."""
    return request.has_body and request.content_length is None


def upstream_fields(request: UpstreamRequest, h1: bool) -> Headers:
    """The request's fields as they go to a VM: framing dropped, then exactly one framing field added
    (`content-length`, or `transfer-encoding: chunked` towards HTTP/1.1), or none for a body-less request."""
    fields = without_framing(request.headers)
    fields.extend(length_field(request))
    if h1 and chunked(request):
        fields.append(CHUNKED)
    return fields


def body_problem(declared: int | None, received: int, ended: bool) -> bool:
    """Whether a request body broke its declared length: more bytes than declared at any time, or fewer
    once it ended (RFC 9114 §4.1.2 calls both malformed). Unknown length: never."""
    if declared is None:
        return False
    return received > declared or (ended and received < declared)


def response_problem(headers: Headers, lower: bool) -> str | None:
    """Why a VM's response head may not reach a client, or None when it may.

    `lower`: names must be lower-case (HTTP/3 upstreams; an HTTP/1.1 VM may use any case). Refused:
    a name or value outside the field grammar, two `content-length`s that differ or one that is not a
    number, and a `content-length` together with a `transfer-encoding` (two framings of one body).
    """
    names = [name for name, _ in headers]
    if not all_match(NAMES if lower else ANY_CASE_NAMES, names) or not all_match(VALUES, [v for _, v in headers]):
        return "field"
    keys = names if lower else [name.lower() for name in names]
    if b"content-length" not in keys and b"transfer-encoding" not in keys:
        return None  # the usual head: nothing more to look at
    lengths: set[bytes] = set()
    coded = False
    for key, (_, value) in zip(keys, headers, strict=True):
        if key == b"content-length":
            lengths.update(part.strip(b" \t") for part in value.split(b","))
        elif key == b"transfer-encoding":
            coded = True
    if lengths and coded:
        return "content-length with transfer-encoding"
    if len(lengths) > 1 or not all(length.isdigit() for length in lengths):
        return "content-length"
    return None
