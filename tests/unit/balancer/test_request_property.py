"""Whatever intake accepts serialises to exactly one HTTP/1.1 request, the one it accepted (hypothesis).

Header lists are generated from hostile pieces (CR, LF, NUL, spaces, colons, `@`, quotes, signs,
framing and connection fields, duplicate pseudo-headers); every accepted one is written as an
HTTP/1.1 upstream request with framing from `content_length` and parsed back with h11.
"""

from __future__ import annotations

import h11
from hypothesis import given, settings
from hypothesis import strategies as st

from services.balancer.core.intake import Refusal, intake
from services.balancer.core.options import ProxyOptions
from services.balancer.core.upstream import UpstreamRequest

Headers = list[tuple[bytes, bytes]]
OPTIONS = ProxyOptions(via=b"1.1 lb")
PIECES = [b"a", b"Z", b"0", b"5", b"/", b"*", b"?", b"#", b"%", b"%41", b":", b"@", b" ", b"\t", b"\r", b"\n",
          b"\r\n", b"\x00", b"\x01", b"\x7f", b"\xff", b'"', b",", b";", b"=", b"+", b"-", b"_", b"[", b"]",
          b"::1", b"example.org", b"http://", b"chunked", b"trailers", b"GET", b"HTTP/1.1"]
GOOD_NAMES = [b"content-length", b"host", b"te", b"x-a", b"accept", b"forwarded", b"x-forwarded-for",
              b"x-forwarded-host", b"x-request-id", b"expect"]
BAD_NAMES = [b"transfer-encoding", b"connection", b"upgrade", b"X-A", b"x a", b"x:a", b"", b"x\r\n"]
PSEUDO = [b":method", b":scheme", b":path", b":authority", b":protocol"]


def glued(pieces: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.lists(st.sampled_from(pieces), max_size=6).map(b"".join)


VALUES = st.one_of(glued(PIECES), st.sampled_from([b"GET", b"POST", b"OPTIONS", b"https", b"http", b"/",
                                                   b"/x?y", b"*", b"example.org", b"a:80", b"5", b"0"]))
SAFE = [b"a", b"0", b"5", b"/", b"-", b".", b" ", b"%41", b"example.org", b"x=1", b"chunked", b"trailers"]
def mostly(good: st.SearchStrategy[bytes], bad: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """`good` nine times in ten, else `bad`: enough accepted blocks to test, enough hostile ones to refuse."""
    return st.integers(0, 9).flatmap(lambda i: good if i else bad)


NAME = mostly(st.sampled_from(GOOD_NAMES), st.one_of(st.sampled_from(BAD_NAMES), glued(PIECES)))
VALUE = mostly(glued(SAFE), VALUES)
FIELD = st.tuples(NAME, VALUE)
PSEUDO_FIELD = st.tuples(mostly(st.sampled_from(PSEUDO[:-1]), st.just(PSEUDO[-1])), VALUES)
BASE = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b":authority", b"example.org")]


@st.composite
def blocks(draw: st.DrawFn) -> Headers:
    """A header block: the usual pseudo-headers, some replaced or added, then generated fields, maybe shuffled."""
    pseudo = dict(BASE)
    for name, value in draw(st.lists(PSEUDO_FIELD, max_size=3)):
        pseudo[name] = value
    headers = [*pseudo.items(), *draw(st.lists(FIELD, max_size=5))]
    return draw(st.permutations(headers)) if draw(st.integers(0, 7)) == 0 else headers


def serialise(request: UpstreamRequest) -> bytes:
    """The HTTP/1.1 request an upstream writes: request line, host, fields, framing from the checked length."""
    lines = [request.method + b" " + request.path + b" HTTP/1.1", b"host: " + request.authority]
    lines += [name + b": " + value for name, value in request.headers]
    if request.content_length is not None:
        lines.append(b"content-length: %d" % request.content_length)
    elif request.has_body:
        lines.append(b"transfer-encoding: chunked")
    body = b"x" * (request.content_length or 0) if request.content_length is not None else b"3\r\nabc\r\n0\r\n\r\n"
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body if request.has_body else b"")


def parsed_back(wire: bytes) -> tuple[h11.Request, bytes, bytes]:
    """The one request in `wire` as h11 reads it, its body, and whatever bytes follow it."""
    server = h11.Connection(h11.SERVER)
    server.receive_data(wire)
    head = server.next_event()
    assert isinstance(head, h11.Request)
    body = b""
    while not isinstance(event := server.next_event(), h11.EndOfMessage):
        assert isinstance(event, h11.Data), event
        body += event.data
    return head, body, server.trailing_data[0]


@settings(max_examples=500)
@given(blocks(), st.booleans())
def test_an_accepted_block_is_exactly_one_request(headers: Headers, has_body: bool) -> None:
    """An accepted block becomes one HTTP/1.1 request (same line, host and fields, nothing after it) with no
    CR, LF or NUL inside any line; anything else is refused."""
    request = intake(headers, has_body, "192.0.2.1", OPTIONS, 16384, b"0" * 32)
    if isinstance(request, Refusal):
        assert request.status == 400 and request.reason
        return
    wire = serialise(request)
    head = wire.split(b"\r\n\r\n", 1)[0]
    assert all(b"\r" not in line and b"\n" not in line and b"\x00" not in line for line in head.split(b"\r\n"))
    parsed, body, rest = parsed_back(wire)
    assert rest == b"", "nothing after the one request"
    assert (parsed.method, parsed.target) == (request.method, request.path)
    framing = {b"content-length", b"transfer-encoding"}
    fields = [(bytes(n), bytes(v)) for n, v in parsed.headers if n not in framing]
    assert fields == [(b"host", request.authority), *request.headers]
    assert len(body) == (request.content_length if request.content_length is not None else 3 * has_body)
