"""The one request model every front and engine is held to, checked once before anything goes upstream.

HTTP/1.1 (h11), HTTP/2 (h2) and HTTP/3 (aioquic, qh3) each parse differently and check different
things: qh3 checks almost nothing, h11 lets control characters and an absolute-form target through,
h2 lets a space into `:path`. Whatever a library let through, the header block comes here in
HTTP/3's form and is held to one grammar, so what reaches a VM is a request that an HTTP/1.1
upstream serialises into exactly one request line and one header block:

- pseudo-headers: only `:method`, `:scheme`, `:authority`, `:path`, each at most once, all before
  the fields (RFC 9113 §8.3, RFC 9114 §4.3); `:method` a token, `:scheme` http or https,
  `:path` origin-form or `*` for OPTIONS, `:authority` a host[:port] without userinfo;
- fields: lower-case token names, values without CR, LF, NUL or other controls (`core.fields`);
- connection-specific fields (`connection`, `keep-alive`, `proxy-connection`, `transfer-encoding`,
  `upgrade`) are malformed in HTTP/2 and HTTP/3 (RFC 9113 §8.2.2, RFC 9114 §4.2), `te` may only
  say `trailers`; the HTTP/1.1 front removes them as hop-by-hop before calling here;
- at most one `content-length`, plain digits, parsed here and handed on, so the upstream frames
  the body from a number the balancer checked, never from the client's text;
- `host`, when sent beside `:authority`, says the same authority (RFC 9113 §8.3.1).

A malformed block gives the reason (a short constant string) instead of a `Request`: the front
answers 400 or resets the stream, glue counts the reason, and nothing reaches a VM. Every check is
a dict or set lookup or one precompiled regular expression: no per-byte Python loop.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from services.balancer.core.fields import NAMES, TOKEN, VALUES, all_match, valid_authority

Headers = list[tuple[bytes, bytes]]

CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})
"""Fields that describe one HTTP/1.1 connection: malformed in an HTTP/2 or HTTP/3 request."""
PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path"})
"""The request pseudo-headers the balancer knows (no extended CONNECT's `:protocol`)."""
SCHEMES = frozenset({b"http", b"https"})

PATH = re.compile(rb"/[\x21-\x7e]*")
"""origin-form (RFC 9112 §3.2.1): a slash, then visible ASCII (what `h11` allows in a target)."""
LENGTH = re.compile(rb"[0-9]{1,15}")
"""A `content-length`: digits only, no sign, space, `_` or list; 15 digits are far beyond any body limit."""

PSEUDO_AFTER_FIELD = "pseudo_after_field"
UNKNOWN_PSEUDO = "unknown_pseudo"
DUPLICATE_PSEUDO = "duplicate_pseudo"
BAD_NAME = "bad_field_name"
BAD_VALUE = "bad_field_value"
CONNECTION_FIELD = "connection_specific_field"
BAD_TE = "bad_te"
BAD_LENGTH = "bad_content_length"
DUPLICATE_LENGTH = "duplicate_content_length"
LENGTH_WITHOUT_BODY = "content_length_without_body"
BAD_METHOD = "bad_method"
CONNECT = "connect"
BAD_SCHEME = "bad_scheme"
BAD_PATH = "bad_path"
BAD_AUTHORITY = "bad_authority"
DUPLICATE_HOST = "duplicate_host"
AUTHORITY_MISMATCH = "authority_mismatch"
"""Why a header block is malformed: the reasons glue counts and logs."""


class Request(NamedTuple):
    """A well-formed request head: the pseudo-headers checked and the fields still to filter and forward."""

    method: bytes
    path: bytes
    authority: bytes
    fields: Headers
    """The regular fields in order, `host` and `content-length` included (the caller drops what it must)."""
    content_length: int | None


def parse(headers: Headers, has_body: bool) -> Request | str:
    """The request in an HTTP/3-style header block, or the reason it is malformed.

    `has_body`: whether a body follows the block; a `content-length` above 0 without one is malformed
    (RFC 9113 §8.1.1, RFC 9114 §4.1.2).
    """
    pseudo: dict[bytes, bytes] = {}
    for name, value in headers:
        if name[:1] != b":":
            break
        if name not in PSEUDO:
            return UNKNOWN_PSEUDO
        if name in pseudo:
            return DUPLICATE_PSEUDO
        pseudo[name] = value
    fields = headers[len(pseudo):]
    names = [name for name, _ in fields]
    problem = _fields_problem(fields, names)
    if problem is not None:
        return problem
    return _request(pseudo, fields, names, has_body)


def _fields_problem(fields: Headers, names: list[bytes]) -> str | None:
    """Why the regular fields are malformed, or None: two regex scans for the whole block, not two per field."""
    if not all_match(NAMES, names):
        return PSEUDO_AFTER_FIELD if any(name[:1] == b":" for name in names) else BAD_NAME
    if not all_match(VALUES, [value for _, value in fields]):
        return BAD_VALUE
    if not CONNECTION_SPECIFIC.isdisjoint(names):
        return CONNECTION_FIELD
    if b"te" in names and any(name == b"te" and value != b"trailers" for name, value in fields):
        return BAD_TE
    return None


def _request(pseudo: dict[bytes, bytes], fields: Headers, names: list[bytes], has_body: bool) -> Request | str:
    """Check the pseudo-headers and the fields they must agree with."""
    method = pseudo.get(b":method", b"")
    if TOKEN.fullmatch(method) is None:
        return BAD_METHOD
    if method == b"CONNECT":
        return CONNECT
    if pseudo.get(b":scheme") not in SCHEMES:
        return BAD_SCHEME
    path = pseudo.get(b":path", b"")
    if PATH.fullmatch(path) is None and not (path == b"*" and method == b"OPTIONS"):
        return BAD_PATH
    authority = _authority(pseudo.get(b":authority"), fields if b"host" in names else [])
    if isinstance(authority, str):
        return authority
    length = content_length(fields) if b"content-length" in names else None
    if isinstance(length, str):
        return length
    if length and not has_body:
        return LENGTH_WITHOUT_BODY
    return Request(method, path, authority, fields, length)


def _authority(authority: bytes | None, fields: Headers) -> bytes | str:
    """The request's authority: `:authority`, else `host`; both must be valid and agree."""
    hosts = [value for name, value in fields if name == b"host"]
    if len(hosts) > 1:
        return DUPLICATE_HOST
    if hosts and authority is not None and hosts[0] != authority:
        return AUTHORITY_MISMATCH
    chosen = authority if authority is not None else (hosts[0] if hosts else b"")
    return chosen if valid_authority(chosen) else BAD_AUTHORITY


def content_length(fields: Headers) -> int | str | None:
    """The one `content-length` of the fields as a number, None without one, or why it is malformed."""
    values = [value for name, value in fields if name == b"content-length"]
    if not values:
        return None
    if len(values) > 1:
        return DUPLICATE_LENGTH
    if LENGTH.fullmatch(values[0]) is None:
        return BAD_LENGTH
    return int(values[0])
