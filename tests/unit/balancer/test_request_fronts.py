"""What the TCP fronts decide before intake: HTTP/1.1 framing and targets (tcp.h1), the reset budget (core.resets)."""

from __future__ import annotations

import h11
import pytest

from services.balancer.core.intake import intake
from services.balancer.core.options import ProxyOptions
from services.balancer.core.resets import ResetBudget
from services.balancer.core.upstream import UpstreamRequest
from services.balancer.tcp import h1


def parsed(head: bytes) -> h11.Request:
    """The h11 request of a raw head."""
    server = h11.Connection(h11.SERVER)
    server.receive_data(head)
    event = server.next_event()
    assert isinstance(event, h11.Request)
    return event


FRAMING: dict[str, tuple[bytes, str | None]] = {
    "content-length only": (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", None),
    "chunked only": (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", None),
    "CL.TE": (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
              h1.BOTH_LENGTHS),
    "TE.CL": (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
              h1.BOTH_LENGTHS),
    "chunked on HTTP/1.0": (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", h1.OLD_CODING),
    "bare LF everywhere": (b"GET / HTTP/1.1\nHost: a\n\n", h1.BARE_LF_REASON),
    "bare LF after one field": (b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", h1.BARE_LF_REASON),
    "bare LF ending the head": (b"GET / HTTP/1.1\r\nHost: a\r\n\n", h1.BARE_LF_REASON),
    "obs-fold with a space": (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", h1.OBS_FOLD_REASON),
    "obs-fold with a tab": (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", h1.OBS_FOLD_REASON),
}


@pytest.mark.parametrize(("head", "problem"), FRAMING.values(), ids=FRAMING.keys())
def test_framing_that_parsers_read_differently_is_refused(head: bytes, problem: str | None) -> None:
    """CL+TE, chunked on HTTP/1.0, bare LF and obs-fold are refused (h11 takes them); clean framing passes."""
    assert h1.framing_problem(parsed(head), head + b"0\r\n\r\nGET /next\n") == problem


def test_only_the_head_is_searched_for_bare_lf() -> None:
    """A bare LF in the body after a clean head is body data, not framing."""
    head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n"
    assert h1.framing_problem(parsed(head), head + b"a\nb\n") is None


@pytest.mark.parametrize(("target", "host", "expected"), [
    (b"/p?q", b"a", (b"/p?q", b"a")),
    (b"*", b"a", (b"*", b"a")),
    (b"http://evil.example/p?q=1", b"a", (b"/p?q=1", b"evil.example")),
    (b"https://b:8443", b"a", (b"/", b"b:8443")),
    (b"http://b?q", b"a", (b"/?q", b"b")),
    (b"http://u@b/", b"a", (b"/", b"u@b")),
    (b"http://b/p#frag", b"a", (b"/p", b"b")),
    (b"b:443", b"b:443", (b"b:443", b"b:443")),
])
def test_targets_become_origin_form_with_their_authority(
    target: bytes, host: bytes, expected: tuple[bytes, bytes]
) -> None:
    """absolute-form becomes origin-form and names the authority (userinfo left for intake to refuse)."""
    assert h1.split_target(target, host) == expected


def _forwarded(head: bytes) -> UpstreamRequest | str:
    request = intake(h1.h3_headers(parsed(head)), False, "192.0.2.1", ProxyOptions(), 16384, b"0" * 32)
    return request if isinstance(request, UpstreamRequest) else request.reason


def test_an_absolute_form_request_is_forwarded_in_origin_form() -> None:
    """GET http://host/path reaches intake as :path /path and :authority host; the Host field is ignored."""
    request = _forwarded(b"GET http://b.example/p?q HTTP/1.1\r\nHost: a.example\r\n\r\n")
    assert isinstance(request, UpstreamRequest)
    assert (request.path, request.authority) == (b"/p?q", b"b.example")


def test_absolute_form_with_userinfo_is_refused() -> None:
    """An absolute-form target with userinfo is a bad authority."""
    assert _forwarded(b"GET http://u:p@b/ HTTP/1.1\r\nHost: a\r\n\r\n") == "bad_authority"


def test_hop_by_hop_fields_stay_on_the_http1_front() -> None:
    """connection, keep-alive, upgrade, te and the fields `connection` names go no further; the
    length and the host cannot be made hop-by-hop."""
    head = (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, x-secret, content-length, host\r\n"
            b"Keep-Alive: 5\r\nUpgrade: h2c\r\nTE: gzip\r\nX-Secret: 1\r\nContent-Length: 0\r\nAccept: */*\r\n\r\n")
    block = h1.h3_headers(parsed(head))
    assert block == [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/"),
                     (b"content-length", b"0"), (b"accept", b"*/*")]


def test_a_control_character_h11_lets_through_is_refused() -> None:
    """h11 takes \\x01 and DEL in a value; the request model refuses them."""
    assert _forwarded(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n") == "bad_field_value"
    assert _forwarded(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n") == "bad_field_value"


def test_the_reset_budget_allows_its_rate_and_stops_a_burst() -> None:
    """`per_s` resets in a second pass, the next one at the same instant overdraws; time refills the budget."""
    budget = ResetBudget(10, now=0.0)
    assert all(budget.spend(0.0) for _ in range(10))
    assert not budget.spend(0.0)
    assert budget.spend(1.0), "a second later the budget is full again"


def test_a_steady_rate_within_the_budget_never_overdraws() -> None:
    """Resets spread at the allowed rate for a long time stay within the budget."""
    budget = ResetBudget(100, now=0.0)
    assert all(budget.spend(i / 100) for i in range(1, 10_000))
