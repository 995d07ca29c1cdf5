"""The smuggling and injection corpus of the edge-safety tests, and the checks on what a backend received.

Written from the published classes: RFC 9112 §11.2 (request smuggling), CL.TE / TE.CL / TE.TE and
obfuscated transfer codings, duplicate and non-canonical lengths, obs-fold, bare LF, absolute-form
targets, CR / LF / NUL in every pseudo-header and in field names and values, connection-specific
fields in HTTP/2 and HTTP/3, and `:authority` tricks. `BLOCKS` are header lists for HTTP/2 and
HTTP/3 clients that send them unvalidated; `RAW` are HTTP/1.1 byte strings.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.support.recorder import Recorded

Headers = list[tuple[bytes, bytes]]
MARK = b"x-injected"
"""The field name every injection attempt tries to smuggle in: it must never reach the backend."""
AUTHORITY = b"example.org"


@dataclass(frozen=True)
class Block:
    """A header list sent as is; `forwarded`: expected at the backend once, canonically (else refused)."""

    name: str
    headers: Headers
    body: bytes | None = None
    forwarded: bool = False
    path: bytes = b"/c"


@dataclass(frozen=True)
class Raw:
    """HTTP/1.1 bytes sent as is; `closes`: the balancer must close the connection after its answer."""

    name: str
    data: bytes
    forwarded: bool = False
    closes: bool = False
    path: bytes = b"/c"
    body: bytes = b""


def pseudo(method: bytes = b"GET", scheme: bytes = b"https", authority: bytes = AUTHORITY,
           path: bytes = b"/c") -> Headers:
    return [(b":method", method), (b":scheme", scheme), (b":authority", authority), (b":path", path)]


INJECTIONS = {"crlf": b"\r\n", "lf": b"\n", "cr": b"\r", "nul": b"\x00"}


def _pseudo_injections() -> list[Block]:
    """CR, LF, CR LF and NUL followed by a smuggled field, in each pseudo-header."""
    cases = []
    for key in ("method", "scheme", "authority", "path"):
        for label, bad in INJECTIONS.items():
            value = dict(method=b"GET", scheme=b"https", authority=AUTHORITY, path=b"/c")[key] + bad + MARK + b": 1"
            cases.append(Block(f":{key} with {label}", pseudo(**{key: value})))
    return cases


def _field_injections() -> list[Block]:
    cases = []
    for label, bad in INJECTIONS.items():
        cases.append(Block(f"value with {label}", [*pseudo(), (b"x-a", b"1" + bad + MARK + b": 1")]))
        cases.append(Block(f"name with {label}", [*pseudo(), (b"x-a" + bad + MARK, b"1")]))
    return cases


BLOCKS: list[Block] = [
    *_pseudo_injections(),
    *_field_injections(),
    Block("value with a control char", [*pseudo(), (b"x-a", b"1\x01")]),
    Block("value with DEL", [*pseudo(), (b"x-a", b"1\x7f")]),
    Block("upper-case name", [*pseudo(), (b"X-A", b"1")]),
    Block("name with a space", [*pseudo(), (b"x a", b"1")]),
    Block(":method with a space and a second request line", pseudo(method=b"GET /evil HTTP/1.1")),
    Block(":path with a space", pseudo(path=b"/c HTTP/1.1")),
    Block(":path absolute-form", pseudo(path=b"http://evil.example/c")),
    Block(":path without a slash", pseudo(path=b"c")),
    Block(":path * for GET", pseudo(path=b"*")),
    Block("CONNECT", pseudo(method=b"CONNECT")),
    Block("connection", [*pseudo(), (b"connection", b"close")]),
    Block("keep-alive", [*pseudo(), (b"keep-alive", b"5")]),
    Block("proxy-connection", [*pseudo(), (b"proxy-connection", b"keep-alive")]),
    Block("transfer-encoding chunked with a body", [*pseudo(b"POST"), (b"transfer-encoding", b"chunked")],
          b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n"),
    Block("upgrade", [*pseudo(), (b"upgrade", b"websocket")]),
    Block("te gzip", [*pseudo(), (b"te", b"gzip")]),
    Block("content-length 5 and 50", [*pseudo(b"POST"), (b"content-length", b"5"), (b"content-length", b"50")],
          b"hello"),
    Block("content-length 5_0", [*pseudo(b"POST"), (b"content-length", b"5_0")], b"hello"),
    Block("content-length +5", [*pseudo(b"POST"), (b"content-length", b"+5")], b"hello"),
    Block("content-length -1", [*pseudo(b"POST"), (b"content-length", b"-1")], b"hello"),
    Block("content-length list", [*pseudo(b"POST"), (b"content-length", b"5, 5")], b"hello"),
    Block("content-length in hex", [*pseudo(b"POST"), (b"content-length", b"0x5")], b"hello"),
    Block("content-length empty", [*pseudo(b"POST"), (b"content-length", b"")], b"hello"),
    Block("content-length without a body", [*pseudo(b"POST"), (b"content-length", b"5")]),
    Block(":authority with userinfo", pseudo(authority=b"user@evil.example")),
    Block(":authority with a port over 65535", pseudo(authority=AUTHORITY + b":99999")),
    Block(":authority with an empty port", pseudo(authority=AUTHORITY + b":")),
    Block(":authority forging a forwarded element", pseudo(authority=b'a";for=6.6.6.6;by="x')),
    Block(":authority with a space", pseudo(authority=b"a b")),
    Block(":authority with a path", pseudo(authority=b"a/b")),
    Block(":authority a bare IPv6", pseudo(authority=b"::1")),
    Block("host differs from :authority", [*pseudo(), (b"host", b"evil.example")]),
    Block("two hosts", [*pseudo(), (b"host", AUTHORITY), (b"host", AUTHORITY)]),
    Block("unknown pseudo-header", [*pseudo(), (b":protocol", b"websocket")]),
    Block("duplicate :path", [*pseudo(), (b":path", b"/other")]),
    Block("pseudo-header after a field", [*pseudo()[:3], (b"x-a", b"1"), pseudo()[3]]),
    Block("no :path", pseudo()[:3]),
    Block("no :method", pseudo()[1:]),
    Block("no :scheme", [h for h in pseudo() if h[0] != b":scheme"]),
    Block("ftp :scheme", pseudo(scheme=b"ftp")),
    # accepted: forwarded once, canonically framed
    Block("plain GET", pseudo(), forwarded=True),
    Block("POST with one length", [*pseudo(b"POST"), (b"content-length", b"5")], b"hello", forwarded=True),
    Block("POST with no length", pseudo(b"POST"), b"hello", forwarded=True),
    Block("te trailers", [*pseudo(), (b"te", b"trailers")], forwarded=True),
    Block("host equal to :authority", [*pseudo(), (b"host", AUTHORITY)], forwarded=True),
    Block("IPv6 authority with port", pseudo(authority=b"[::1]:8443"), forwarded=True),
    Block("spoofed forwarding headers", [*pseudo(), (b"forwarded", b"for=6.6.6.6"), (b"x-forwarded-for", b"6.6.6.6"),
                                        (b"x-forwarded-host", b"evil.example")], forwarded=True),
    Block("query and every visible path character", pseudo(path=b"/c?q=1&r=%20;:@!$'()*+,="), forwarded=True,
          path=b"/c?q=1&r=%20;:@!$'()*+,="),
]

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: example.org\r\n\r\n"


def _post(fields: bytes, body: bytes, version: bytes = b"1.1") -> bytes:
    return b"POST /c HTTP/" + version + b"\r\nHost: example.org\r\n" + fields + b"\r\n" + body


RAW: list[Raw] = [
    Raw("CL.TE", _post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED), closes=True),
    Raw("TE.CL", _post(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n" + SMUGGLED), closes=True),
    Raw("TE.TE xchunked", _post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n" + SMUGGLED), closes=True),
    Raw("TE gzip, chunked", _post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"), closes=True),
    Raw("TE chunked, identity", _post(b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n"), closes=True),
    Raw("TE twice", _post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", b"0\r\n\r\n"), closes=True),
    Raw("TE with space before colon", _post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"), closes=True),
    Raw("TE with vertical tab", _post(b"Transfer-Encoding:\x0bchunked\r\n", b"0\r\n\r\n"), closes=True),
    Raw("TE folded onto another field", _post(b"X-A: 1\r\n Transfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        closes=True),
    Raw("TE chunked on HTTP/1.0", _post(b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", b"1.0"), closes=True),
    Raw("CL 5 and 50", _post(b"Content-Length: 5\r\nContent-Length: 50\r\n", b"hello"), closes=True),
    Raw("CL 5_0", _post(b"Content-Length: 5_0\r\n", b"hello"), closes=True),
    Raw("CL +50", _post(b"Content-Length: +50\r\n", b"hello"), closes=True),
    Raw("CL -1", _post(b"Content-Length: -1\r\n", b"hello"), closes=True),
    Raw("CL with junk", _post(b"Content-Length: 5x\r\n", b"hello"), closes=True),
    Raw("obs-fold", b"GET /c HTTP/1.1\r\nHost: example.org\r\nX-A: 1\r\n\tx-injected: 1\r\n\r\n", closes=True),
    Raw("bare LF head", b"GET /c HTTP/1.1\nHost: example.org\nX-A: 1\n\n", closes=True),
    Raw("bare LF in one line", b"GET /c HTTP/1.1\r\nHost: example.org\nx-injected: 1\r\n\r\n", closes=True),
    Raw("bare CR in a value", b"GET /c HTTP/1.1\r\nHost: example.org\r\nX-A: 1\rx-injected: 1\r\n\r\n", closes=True),
    Raw("NUL in a value", b"GET /c HTTP/1.1\r\nHost: example.org\r\nX-A: 1\x00\r\n\r\n", closes=True),
    Raw("control char in a value", b"GET /c HTTP/1.1\r\nHost: example.org\r\nX-A: 1\x01\r\n\r\n"),
    Raw("DEL in a value", b"GET /c HTTP/1.1\r\nHost: example.org\r\nX-A: 1\x7f\r\n\r\n"),
    Raw("space in the target", b"GET /c x HTTP/1.1\r\nHost: example.org\r\n\r\n", closes=True),
    Raw("absolute-form with userinfo", b"GET http://u@evil.example/c HTTP/1.1\r\nHost: example.org\r\n\r\n"),
    Raw("host with userinfo", b"GET /c HTTP/1.1\r\nHost: u@evil.example\r\n\r\n"),
    Raw("host with a quote", b'GET /c HTTP/1.1\r\nHost: a";for=6.6.6.6\r\n\r\n'),
    Raw("two hosts", b"GET /c HTTP/1.1\r\nHost: example.org\r\nHost: evil.example\r\n\r\n", closes=True),
    Raw("CONNECT", b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n"),
    # accepted: forwarded once, canonically framed
    Raw("absolute-form", b"GET http://example.org/c?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n", forwarded=True,
        path=b"/c?q=1"),
    Raw("CL with leading zeros", _post(b"Content-Length: 005\r\n", b"hello"), forwarded=True, body=b"hello"),
    Raw("CL list of equal values", _post(b"Content-Length: 5, 5\r\n", b"hello"), forwarded=True, body=b"hello"),
    Raw("chunked body", _post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"), forwarded=True,
        body=b"hello"),
    Raw("chunked with upper case", _post(b"Transfer-Encoding: Chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
        forwarded=True, body=b"hello"),
    Raw("connection naming fields", b"GET /c HTTP/1.1\r\nHost: example.org\r\nConnection: x-injected, keep-alive\r\n"
        b"x-injected: 1\r\nKeep-Alive: 5\r\n\r\n", forwarded=True),
]


def problems_of_forwarded(received: list[Recorded], path: bytes, body: bytes) -> list[str]:
    """What is wrong with what the backend got for one accepted request (empty: exactly right)."""
    if len(received) != 1:
        return [f"{len(received)} requests reached the backend"]
    request, found = received[0], []
    if request.target != path:
        found.append(f"target {request.target!r}")
    if request.values(b"host") != [AUTHORITY] and not request.values(b"host")[0].startswith(b"["):
        found.append(f"host {request.values(b'host')!r}")
    lengths, codings = request.values(b"content-length"), request.values(b"transfer-encoding")
    if len(lengths) + len(codings) > 1 or codings not in ([], [b"chunked"]):
        found.append(f"framing {lengths!r} {codings!r}")
    if request.body != body:
        found.append(f"body {request.body!r}")
    for name, value in request.headers:
        if name == MARK or b"6.6.6.6" in value or b"evil.example" in value:
            found.append(f"injected {name!r}: {value!r}")
    return found
