"""An HTTP/1.1 request head as the TCP front reads it: the HTTP/3-style block and the framings refused.

Split from `h1` so that module keeps the connection (h11 events, the response side, keep-alive and
pipelining) and this one the pure reading of one request: hop-by-hop fields dropped, the target made
origin-form, and the framings other parsers read differently (RFC 9112 section 11.2) named for refusal.
No socket, no state: each function takes h11's parsed request (and the raw head) and returns values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import h11

from services.balancer.core.headers import Headers, connection_tokens

CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te", b"host"}
)
"""Fields of this connection, never passed on as fields (`host` becomes `:authority`)."""
KEEP_LISTED = frozenset({b"content-length", b"host"})
"""Names `connection` cannot make hop-by-hop: the request's length and authority are not the client's to hide."""
ABSOLUTE = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*://(?P<authority>[^/?#]*)(?P<path>[^#]*)(?:#.*)?")
"""absolute-form (RFC 9112 §3.2.2): scheme://authority, then the path and query that become origin-form."""
HEAD_END = re.compile(rb"\r?\n\r?\n")
BARE_LF = re.compile(rb"(?<!\r)\n")
OBS_FOLD = re.compile(rb"\n[ \t]")
BARE_LF_REASON, OBS_FOLD_REASON = "bare_lf", "obs_fold"
BOTH_LENGTHS = "content_length_with_transfer_encoding"
BAD_CODING = "bad_transfer_coding"
OLD_CODING = "transfer_encoding_on_http10"
"""Why a request's framing is refused (RFC 9112 §6.1, §6.3, §11.2): glue counts these like intake's reasons."""


def h3_headers(request: h11.Request) -> Headers:
    """An HTTP/1.1 request line and headers as the HTTP/3-style block intake takes.

    Hop-by-hop fields stay here (this connection's business), an absolute-form target becomes
    origin-form with its own authority (the `host` is then ignored, RFC 9112 §3.2.2), and what is
    left is held to the same request model as HTTP/2 and HTTP/3.
    """
    host, fields = b"", []
    for name, value in request.headers:
        fields.append((bytes(name), bytes(value)))
        if name == b"host":
            host = bytes(value)
    dropped = CONNECTION_SPECIFIC | (connection_tokens(fields) - KEEP_LISTED)
    path, authority = split_target(bytes(request.target), host)
    return [(b":method", bytes(request.method)), (b":scheme", b"https"), (b":authority", authority),
            (b":path", path), *[(n, v) for n, v in fields if n not in dropped]]


def split_target(target: bytes, host: bytes) -> tuple[bytes, bytes]:
    """(path, authority) of a request target: origin-form keeps `host`, absolute-form names its own.

    Anything else (authority-form, junk) is passed on unchanged for the request model to refuse.
    """
    if target.startswith(b"/") or target == b"*":
        return target, host
    absolute = ABSOLUTE.fullmatch(target)
    if absolute is None:
        return target, host
    path = absolute["path"]
    return (path if path.startswith(b"/") else b"/" + path), absolute["authority"]


def framing_problem(request: h11.Request, head: bytes) -> str | None:
    """Why a request's framing cannot be trusted, or None; `head` is the raw bytes h11 parsed it from.

    h11 takes some framings that other parsers read differently (RFC 9112 §11.2): a length beside a
    transfer coding (it follows the coding), bare LF line ends and obs-fold. Each is refused, and the
    connection closed after the answer, rather than guessed at.
    """
    names = [name for name, _ in request.headers]
    if b"transfer-encoding" in names:
        if b"content-length" in names:
            return BOTH_LENGTHS
        if request.http_version != b"1.1":
            return OLD_CODING
        if dict(request.headers)[b"transfer-encoding"] != b"chunked":
            return BAD_CODING
    end = HEAD_END.search(head)
    head = head[: end.end()] if end is not None else head
    if BARE_LF.search(head) is not None:
        return BARE_LF_REASON
    return OBS_FOLD_REASON if OBS_FOLD.search(head) is not None else None


def has_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a request announces a body (h11 has checked the framing headers already)."""
    for name, value in headers:
        if name == b"transfer-encoding":
            return True
        if name == b"content-length":
            return int(value) > 0
    return False
