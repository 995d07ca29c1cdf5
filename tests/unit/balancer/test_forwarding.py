"""Forwarding headers a client cannot spoof, trusted proxies, and the request id (pure functions)."""

from __future__ import annotations

import re

import pytest

from services.balancer.core.headers import (
    TrustedProxies,
    forwarding,
    quoted,
    real_client,
    request_id_of,
    response_headers,
)
from services.balancer.core.intake import intake
from services.balancer.core.options import ProxyOptions
from services.balancer.core.upstream import UpstreamRequest
from services.balancer.proxy.ids import new_request_id

ID = new_request_id()

SPOOFED = [
    (b"x-forwarded-for", b"6.6.6.6"), (b"forwarded", b"for=6.6.6.6"), (b"x-forwarded-proto", b"http"),
    (b"x-real-ip", b"6.6.6.6"), (b"x-request-id", b"chosen-by-client"), (b"accept", b"*/*"),
]
HEX32 = re.compile(rb"[0-9a-f]{32}")


def _values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [v for n, v in headers if n == name]


def test_an_untrusted_client_claims_are_replaced() -> None:
    """From an untrusted peer, every forwarding header and the request id are the balancer's own, once each."""
    out = forwarding(SPOOFED, "192.0.2.7", b"example.org", b"3 lb", fresh_id=ID)
    assert _values(out, b"x-forwarded-for") == [b"192.0.2.7"]
    assert _values(out, b"x-real-ip") == [b"192.0.2.7"]
    assert _values(out, b"x-forwarded-proto") == [b"https"]
    assert _values(out, b"forwarded") == [b'for=192.0.2.7;proto=https;host="example.org"']
    (request_id,) = _values(out, b"x-request-id")
    assert HEX32.fullmatch(request_id)
    assert _values(out, b"accept") == [b"*/*"]


def test_peers_outside_the_trusted_cidrs_are_untrusted() -> None:
    """A trusted list that does not hold the peer changes nothing: the chain is still replaced."""
    out = dict(forwarding(SPOOFED, "192.0.2.7", b"", b"3 lb", TrustedProxies(["10.0.0.0/8"]), fresh_id=ID))
    assert out[b"x-forwarded-for"] == b"192.0.2.7" and out[b"x-request-id"] != b"chosen-by-client"


def test_a_trusted_peer_keeps_its_chain_proto_and_request_id() -> None:
    """From a trusted proxy, the chain gets the peer appended and its proto, real ip and request id are kept."""
    proxies = TrustedProxies(["10.0.0.0/8"])
    out = forwarding(SPOOFED, "10.1.2.3", b"example.org", b"3 lb", proxies, fresh_id=ID)
    assert _values(out, b"x-forwarded-for") == [b"6.6.6.6, 10.1.2.3"]
    assert _values(out, b"forwarded") == [b'for=6.6.6.6, for=10.1.2.3;proto=https;host="example.org"']
    assert _values(out, b"x-forwarded-proto") == [b"http"]
    assert _values(out, b"x-real-ip") == [b"6.6.6.6"]
    assert _values(out, b"x-request-id") == [b"chosen-by-client"]


def test_a_trusted_peer_with_an_insane_request_id_gets_a_new_one() -> None:
    """A request id longer than 200 bytes or with spaces is replaced even from a trusted proxy."""
    proxies = TrustedProxies(["10.0.0.0/8"])
    for bad in (b"x" * 201, b"has space", b"tab\tinside"):
        out = dict(forwarding([(b"x-request-id", bad)], "10.0.0.1", b"", b"3 lb", proxies, fresh_id=ID))
        assert HEX32.fullmatch(out[b"x-request-id"]), bad
    kept = dict(forwarding([(b"x-request-id", b"x" * 200)], "10.0.0.1", b"", b"3 lb", proxies, fresh_id=ID))
    assert kept[b"x-request-id"] == b"x" * 200


def test_real_client_is_the_nearest_untrusted_hop() -> None:
    """x-real-ip skips trusted hops from the right, so a client cannot push a fake address past them."""
    proxies = TrustedProxies(["10.0.0.0/8"])
    assert real_client(b"6.6.6.6, 198.51.100.4, 10.0.0.9, 10.0.0.1", proxies) == b"198.51.100.4"
    assert real_client(b"10.0.0.9, 10.0.0.1", proxies) == b"10.0.0.9"
    chain = [(b"x-forwarded-for", b"6.6.6.6, 198.51.100.4")]
    out = dict(forwarding(chain, "10.0.0.1", b"", b"3 lb", proxies, fresh_id=ID))
    assert out[b"x-real-ip"] == b"198.51.100.4"


def test_trusted_proxies_match_cidrs_ipv6_and_mapped_ipv4() -> None:
    """Addresses match their CIDRs, an IPv4-mapped IPv6 peer matches as IPv4, and junk never matches."""
    proxies = TrustedProxies(["10.0.0.0/8", " 2001:db8::/32 ", ""])
    assert "10.255.0.1" in proxies and "2001:db8::5" in proxies and "::ffff:10.0.0.1" in proxies
    assert "11.0.0.1" not in proxies and "unknown" not in proxies and "1" * 300 not in proxies
    assert not TrustedProxies() and "10.0.0.1" not in TrustedProxies()


def test_trusted_proxies_refuse_a_bad_cidr() -> None:
    """A malformed CIDR is an error at start, not a silent never-match."""
    with pytest.raises(ValueError, match="nope"):
        TrustedProxies(["nope"])


def test_request_ids_differ_per_request() -> None:
    """Two requests never share a generated id."""
    ids = {request_id_of(forwarding([], "192.0.2.7", b"", b"3 lb", fresh_id=new_request_id())) for _ in range(1000)}
    assert len(ids) == 1000


def test_response_echoes_the_request_id_instead_of_the_backends() -> None:
    """The client sees the balancer's request id once, even when the backend sent its own."""
    out = response_headers(200, [(b"x-request-id", b"backend-made"), (b"server", b"x")], b"3 lb", None, b"abc")
    assert _values(out, b"x-request-id") == [b"abc"]
    assert response_headers(200, [(b"x-request-id", b"kept")], b"3 lb", None)[1] == (b"x-request-id", b"kept")


def test_intake_applies_the_options_trusted_proxies() -> None:
    """intake() keeps a trusted peer's chain and id (from ProxyOptions) and replaces an untrusted one's."""
    headers = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b":authority", b"a"), *SPOOFED]
    options = ProxyOptions(trusted_proxies=TrustedProxies(["127.0.0.0/8"]))
    trusted = intake(headers, False, "127.0.0.1", options, 16384, new_request_id())
    untrusted = intake(headers, False, "192.0.2.1", options, 16384, new_request_id())
    assert isinstance(trusted, UpstreamRequest) and isinstance(untrusted, UpstreamRequest)
    assert request_id_of(trusted.headers) == b"chosen-by-client"
    assert dict(trusted.headers)[b"x-forwarded-for"] == b"6.6.6.6, 127.0.0.1"
    assert dict(untrusted.headers)[b"x-forwarded-for"] == b"192.0.2.1"
    assert HEX32.fullmatch(request_id_of(untrusted.headers))


@pytest.mark.parametrize("authority", [b'a";for=6.6.6.6', b"a, for=6.6.6.6", b"u@a", b"a b", b"a\\", b""])
def test_an_authority_that_is_no_host_port_is_named_nowhere(authority: bytes) -> None:
    """`forwarded` gets no host= and `x-forwarded-host` is absent for an invalid authority: no element can be forged."""
    out = forwarding([], "192.0.2.7", authority, b"3 lb", fresh_id=ID)
    assert _values(out, b"forwarded") == [b"for=192.0.2.7;proto=https"]
    assert _values(out, b"x-forwarded-host") == []


def test_forwarded_values_are_tokens_or_quoted_strings() -> None:
    """RFC 7239: an IPv4 node is a token, an IPv6 node and the host are quoted-strings."""
    out = forwarding([], "2001:db8::7", b"[2001:db8::1]:8443", b"3 lb", fresh_id=ID)
    assert _values(out, b"forwarded") == [b'for="[2001:db8::7]";proto=https;host="[2001:db8::1]:8443"']


def test_quoted_escapes_quote_and_backslash() -> None:
    """A quoted-string escapes `"` and `\\`, so the value cannot end early."""
    assert quoted(b'a"b\\c') == b'"a\\"b\\\\c"'


def test_x_forwarded_host_is_the_authority_unless_a_trusted_peer_names_a_valid_one() -> None:
    """An untrusted client's x-forwarded-host is replaced; a trusted peer's is kept only when it is host[:port]."""
    claim = [(b"x-forwarded-host", b"spoofed.example")]
    assert _values(forwarding(claim, "192.0.2.7", b"a.example", b"3 lb", fresh_id=ID),
                   b"x-forwarded-host") == [b"a.example"]
    proxies = TrustedProxies(["10.0.0.0/8"])
    kept = forwarding(claim, "10.1.2.3", b"a.example", b"3 lb", proxies, fresh_id=ID)
    assert _values(kept, b"x-forwarded-host") == [b"spoofed.example"]
    bad = forwarding([(b"x-forwarded-host", b"u@x")], "10.1.2.3", b"a.example", b"3 lb", proxies, fresh_id=ID)
    assert _values(bad, b"x-forwarded-host") == [b"a.example"]
