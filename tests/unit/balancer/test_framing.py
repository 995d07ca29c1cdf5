"""The pure framing rules: how a request body is framed towards a VM, and which response heads are refused."""

from __future__ import annotations

import pytest

from services.balancer.core.framing import body_problem, response_problem, upstream_fields
from services.balancer.core.headers import Headers
from services.balancer.core.upstream import UpstreamRequest

SMUGGLED: Headers = [(b"accept", b"*/*"), (b"Content-Length", b"99"), (b"transfer-encoding", b"chunked"),
                     (b"content-length", b"7")]


def _request(has_body: bool, length: int | None) -> UpstreamRequest:
    return UpstreamRequest(b"POST", b"/", b"example.org", list(SMUGGLED), has_body, length)


def _framing(fields: Headers) -> Headers:
    return [(n, v) for n, v in fields if n.lower() in (b"content-length", b"transfer-encoding")]


def test_a_known_length_becomes_one_canonical_content_length_and_nothing_else() -> None:
    """Whatever framing headers remain, the VM gets exactly `content-length: <parsed value>`."""
    fields = upstream_fields(_request(True, 5), h1=True)
    assert _framing(fields) == [(b"content-length", b"5")]
    assert (b"accept", b"*/*") in fields


def test_an_unknown_length_is_chunked_towards_http1_only() -> None:
    """A body of unknown length is chunked for an HTTP/1.1 VM and carries no framing field for HTTP/3."""
    assert _framing(upstream_fields(_request(True, None), h1=True)) == [(b"transfer-encoding", b"chunked")]
    assert _framing(upstream_fields(_request(True, None), h1=False)) == []


def test_a_request_without_body_gets_no_chunked_coding() -> None:
    """No body and no length: no framing field at all; a declared zero stays a zero length."""
    assert _framing(upstream_fields(_request(False, None), h1=True)) == []
    assert _framing(upstream_fields(_request(False, 0), h1=True)) == [(b"content-length", b"0")]


@pytest.mark.parametrize(
    ("declared", "received", "ended", "problem"),
    [(None, 10**9, True, False), (5, 5, True, False), (5, 3, False, False), (5, 6, False, True),
     (5, 4, True, True), (0, 0, True, False), (0, 1, False, True)],
)
def test_a_body_breaks_its_length_when_longer_at_any_time_or_shorter_at_the_end(
    declared: int | None, received: int, ended: bool, problem: bool
) -> None:
    """More bytes than declared is malformed at once; fewer only once the body ended; no length never."""
    assert body_problem(declared, received, ended) is problem


@pytest.mark.parametrize(
    "headers",
    [[(b"content-type", b"text/plain"), (b"content-length", b"5")],
     [(b"content-length", b"5"), (b"content-length", b"5")],
     [(b"content-length", b"5, 5")],
     [(b"transfer-encoding", b"chunked")],
     [(b"x-note", b"a\tb \x80c")]],
)
def test_well_formed_response_heads_pass(headers: Headers) -> None:
    """Valid fields, repeated identical lengths and a lone transfer coding are accepted."""
    assert response_problem(headers, lower=True) is None


@pytest.mark.parametrize(
    ("headers", "lower", "why"),
    [([(b"x-a", b"one\r\nset-cookie: x=1")], True, "field"),
     ([(b"x-a", b"nul\x00")], False, "field"),
     ([(b"x a", b"v")], False, "field"),
     ([(b"X-Upper", b"v")], True, "field"),
     ([(b"content-length", b"5"), (b"content-length", b"6")], True, "content-length"),
     ([(b"content-length", b"5, 6")], True, "content-length"),
     ([(b"content-length", b"-1")], True, "content-length"),
     ([(b"Content-Length", b"5"), (b"Transfer-Encoding", b"chunked")], False, "content-length with transfer-encoding")],
)
def test_malformed_response_heads_are_refused(headers: Headers, lower: bool, why: str) -> None:
    """A bad name or value, differing or non-numeric lengths, or two framings name their problem."""
    assert response_problem(headers, lower=lower) == why


def test_an_http1_vm_may_use_any_case() -> None:
    """Upper-case names are fine from an HTTP/1.1 VM (checked with lower=False)."""
    assert response_problem([(b"Content-Type", b"text/plain")], lower=False) is None
