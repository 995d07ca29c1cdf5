"""The request model every front shares (core.request via intake): each rule accepts the valid, refuses the rest."""

from __future__ import annotations

import pytest

from services.balancer.core import request as rules
from services.balancer.core.intake import TOO_LARGE, Refusal, intake
from services.balancer.core.options import ProxyOptions
from services.balancer.core.request import Request, parse
from services.balancer.core.upstream import UpstreamRequest

Headers = list[tuple[bytes, bytes]]
OPTIONS = ProxyOptions(via=b"3 lb")
ID = b"0" * 32


def block(*fields: tuple[bytes, bytes], method: bytes = b"GET", path: bytes = b"/x?y=1",
          authority: bytes | None = b"example.org", scheme: bytes = b"https") -> Headers:
    """A request block with the usual pseudo-headers and `fields` after them."""
    pseudo = [(b":method", method), (b":scheme", scheme), (b":path", path)]
    if authority is not None:
        pseudo.append((b":authority", authority))
    return [*pseudo, *fields]


ACCEPTED: dict[str, tuple[Headers, bool]] = {
    "plain GET": (block(), False),
    "every token character in a method": (block(method=b"M-._~!#$%&'*+^`|0"), False),
    "OPTIONS *": (block(method=b"OPTIONS", path=b"*"), False),
    "http scheme": (block(scheme=b"http"), False),
    "authority with port": (block(authority=b"example.org:8443"), False),
    "IPv4 authority": (block(authority=b"192.0.2.1:80"), False),
    "IPv6 authority": (block(authority=b"[2001:db8::1]:443"), False),
    "percent-encoded reg-name": (block(authority=b"ex%41mple.org"), False),
    "host only (no :authority)": (block((b"host", b"example.org"), authority=None), False),
    "host equal to :authority": (block((b"host", b"example.org")), False),
    "te: trailers": (block((b"te", b"trailers")), False),
    "value with inner space, tab and obs-text": (block((b"x-a", b"a b\tc\xff")), False),
    "empty value": (block((b"x-a", b"")), False),
    "one content-length with a body": (block((b"content-length", b"5")), True),
    "content-length 0 without a body": (block((b"content-length", b"0")), False),
    "body of unknown length": (block(), True),
    "path with query and every visible character": (block(path=b"/a/b;c?d=e&f=%20#!$'()*+,:@[]~"), False),
}

REFUSED: dict[str, tuple[Headers, bool, str]] = {
    "no :method": ([(b":scheme", b"https"), (b":path", b"/"), (b":authority", b"a")], False, rules.BAD_METHOD),
    "method with a space": (block(method=b"GET /x"), False, rules.BAD_METHOD),
    "method with CR LF": (block(method=b"GET\r\nX:"), False, rules.BAD_METHOD),
    "empty method": (block(method=b""), False, rules.BAD_METHOD),
    "CONNECT": (block(method=b"CONNECT", path=b"/"), False, rules.CONNECT),
    "no :scheme": ([(b":method", b"GET"), (b":path", b"/"), (b":authority", b"a")], False, rules.BAD_SCHEME),
    "ftp scheme": (block(scheme=b"ftp"), False, rules.BAD_SCHEME),
    "no :path": ([(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a")], False, rules.BAD_PATH),
    "empty path": (block(path=b""), False, rules.BAD_PATH),
    "absolute-form path": (block(path=b"http://evil/"), False, rules.BAD_PATH),
    "path with a space": (block(path=b"/a HTTP/1.1"), False, rules.BAD_PATH),
    "path with CR LF": (block(path=b"/\r\nx: y"), False, rules.BAD_PATH),
    "path with NUL": (block(path=b"/\x00"), False, rules.BAD_PATH),
    "path with a raw non-ASCII byte": (block(path=b"/\xc3\xa9"), False, rules.BAD_PATH),
    "* for GET": (block(path=b"*"), False, rules.BAD_PATH),
    "no authority at all": (block(authority=None), False, rules.BAD_AUTHORITY),
    "empty authority": (block(authority=b""), False, rules.BAD_AUTHORITY),
    "userinfo in authority": (block(authority=b"user@example.org"), False, rules.BAD_AUTHORITY),
    "port over 65535": (block(authority=b"example.org:65536"), False, rules.BAD_AUTHORITY),
    "empty port": (block(authority=b"example.org:"), False, rules.BAD_AUTHORITY),
    "signed port": (block(authority=b"example.org:+80"), False, rules.BAD_AUTHORITY),
    "bare IPv6": (block(authority=b"::1"), False, rules.BAD_AUTHORITY),
    "authority with a quote": (block(authority=b'a";for=6.6.6.6'), False, rules.BAD_AUTHORITY),
    "authority with a slash": (block(authority=b"a/b"), False, rules.BAD_AUTHORITY),
    "authority with CR LF": (block(authority=b"a\r\nx: y"), False, rules.BAD_AUTHORITY),
    "bad host": (block((b"host", b"a b"), authority=None), False, rules.BAD_AUTHORITY),
    "host differs from :authority": (block((b"host", b"other.org")), False, rules.AUTHORITY_MISMATCH),
    "two hosts": (block((b"host", b"a"), (b"host", b"a"), authority=None), False, rules.DUPLICATE_HOST),
    "unknown pseudo-header": (block((b":protocol", b"websocket")), False, rules.UNKNOWN_PSEUDO),
    "duplicate :path": ([*block(), (b":path", b"/y")], False, rules.DUPLICATE_PSEUDO),
    "pseudo-header after a field": ([(b"x-a", b"1"), *block()], False, rules.PSEUDO_AFTER_FIELD),
    "upper-case name": (block((b"X-A", b"1")), False, rules.BAD_NAME),
    "name with a space": (block((b"x a", b"1")), False, rules.BAD_NAME),
    "name with a colon": (block((b"x:a", b"1")), False, rules.BAD_NAME),
    "empty name": (block((b"", b"1")), False, rules.BAD_NAME),
    "name with CR LF": (block((b"x\r\ny", b"1")), False, rules.BAD_NAME),
    "value with CR LF": (block((b"x-a", b"1\r\nx-b: 2")), False, rules.BAD_VALUE),
    "value with bare LF": (block((b"x-a", b"1\nx-b: 2")), False, rules.BAD_VALUE),
    "value with bare CR": (block((b"x-a", b"1\r2")), False, rules.BAD_VALUE),
    "value with NUL": (block((b"x-a", b"1\x00")), False, rules.BAD_VALUE),
    "value with another control": (block((b"x-a", b"1\x01")), False, rules.BAD_VALUE),
    "value with DEL": (block((b"x-a", b"1\x7f")), False, rules.BAD_VALUE),
    "value with leading space": (block((b"x-a", b" 1")), False, rules.BAD_VALUE),
    "value with trailing tab": (block((b"x-a", b"1\t")), False, rules.BAD_VALUE),
    "connection": (block((b"connection", b"close")), False, rules.CONNECTION_FIELD),
    "keep-alive": (block((b"keep-alive", b"5")), False, rules.CONNECTION_FIELD),
    "proxy-connection": (block((b"proxy-connection", b"x")), False, rules.CONNECTION_FIELD),
    "transfer-encoding": (block((b"transfer-encoding", b"chunked")), True, rules.CONNECTION_FIELD),
    "upgrade": (block((b"upgrade", b"websocket")), False, rules.CONNECTION_FIELD),
    "te other than trailers": (block((b"te", b"gzip")), False, rules.BAD_TE),
    "two equal content-lengths": (block((b"content-length", b"5"), (b"content-length", b"5")), True,
                                  rules.DUPLICATE_LENGTH),
    "content-length 5 and 50": (block((b"content-length", b"5"), (b"content-length", b"50")), True,
                                rules.DUPLICATE_LENGTH),
    "content-length list": (block((b"content-length", b"5, 5")), True, rules.BAD_LENGTH),
    "content-length with +": (block((b"content-length", b"+50")), True, rules.BAD_LENGTH),
    "content-length with -": (block((b"content-length", b"-1")), True, rules.BAD_LENGTH),
    "content-length with _": (block((b"content-length", b"5_0")), True, rules.BAD_LENGTH),
    "content-length in hex": (block((b"content-length", b"0x10")), True, rules.BAD_LENGTH),
    "content-length with junk first": (block((b"content-length", b"a5")), True, rules.BAD_LENGTH),
    "content-length with inner space": (block((b"content-length", b"5 0")), True, rules.BAD_LENGTH),
    "empty content-length": (block((b"content-length", b"")), True, rules.BAD_LENGTH),
    "content-length of 16 digits": (block((b"content-length", b"1" * 16)), True, rules.BAD_LENGTH),
    "content-length without a body": (block((b"content-length", b"5")), False, rules.LENGTH_WITHOUT_BODY),
}


@pytest.mark.parametrize(("headers", "has_body"), ACCEPTED.values(), ids=ACCEPTED.keys())
def test_the_model_accepts_well_formed_requests(headers: Headers, has_body: bool) -> None:
    """A well-formed block parses into a Request whose method, path and authority are the block's."""
    request = parse(headers, has_body)
    assert isinstance(request, Request), request
    pseudo = dict(h for h in headers if h[0].startswith(b":"))
    assert (request.method, request.path) == (pseudo[b":method"], pseudo[b":path"])
    assert request.authority == pseudo.get(b":authority", dict(headers).get(b"host"))


@pytest.mark.parametrize(("headers", "has_body", "reason"), REFUSED.values(), ids=REFUSED.keys())
def test_the_model_refuses_malformed_requests_with_their_reason(headers: Headers, has_body: bool, reason: str) -> None:
    """A malformed block is refused with the reason of the rule it breaks, and intake answers 400 with it."""
    assert parse(headers, has_body) == reason
    refusal = intake(headers, has_body, "192.0.2.1", OPTIONS, 16384, ID)
    assert refusal == Refusal(400, b"bad request\n", reason)


def test_the_parsed_length_is_handed_on_and_the_field_is_not() -> None:
    """intake hands the checked length on as a number; the client's `content-length` text is not forwarded."""
    request = intake(block((b"content-length", b"0005"), (b"x-a", b"1")), True, "192.0.2.1", OPTIONS, 16384, ID)
    assert isinstance(request, UpstreamRequest)
    assert request.content_length == 5
    assert all(name not in (b"content-length", b"transfer-encoding") for name, _ in request.headers)
    assert (b"x-a", b"1") in request.headers


def test_no_length_means_none() -> None:
    """A request without `content-length` hands on None (the upstream then chunks a body)."""
    request = intake(block(), True, "192.0.2.1", OPTIONS, 16384, ID)
    assert isinstance(request, UpstreamRequest) and request.content_length is None and request.has_body


def test_hop_by_hop_and_expect_are_not_forwarded() -> None:
    """`te: trailers`, `host`, `expect` and the proxy-authorization of this hop stay at the balancer."""
    fields = [(b"te", b"trailers"), (b"host", b"example.org"), (b"expect", b"100-continue"),
              (b"proxy-authorization", b"x"), (b"accept", b"*/*")]
    request = intake(block(*fields), True, "192.0.2.1", OPTIONS, 16384, ID)
    assert isinstance(request, UpstreamRequest)
    names = [name for name, _ in request.headers]
    assert b"accept" in names and not {b"te", b"host", b"expect", b"proxy-authorization"} & set(names)


def test_the_authority_comes_from_host_when_there_is_no_pseudo_header() -> None:
    """Without `:authority`, the `host` field names the authority the upstream request carries."""
    request = intake(block((b"host", b"example.org:8443"), authority=None), False, "192.0.2.1", OPTIONS, 16384, ID)
    assert isinstance(request, UpstreamRequest) and request.authority == b"example.org:8443"


def test_an_oversized_block_is_431_before_any_other_rule() -> None:
    """A block over the header limit is answered 431, even when it is also malformed."""
    headers = block((b"X-Bad", b"\r\n" + b"a" * 20_000))
    assert intake(headers, False, "192.0.2.1", OPTIONS, 16384, ID) is TOO_LARGE
