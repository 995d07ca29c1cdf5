"""Admission: a cap per client network (per prefix), forgotten once it holds nothing; tickets given back once."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.balancer.core.admission import Admission, PeerCounts, Ticket, peer_key
from services.balancer.core.options import Limits


def test_an_address_at_its_cap_is_refused_while_another_address_is_admitted() -> None:
    """Two connections from one address fill a cap of 2; a third from it is refused, one from elsewhere is not."""
    counts = PeerCounts(2)
    assert counts.admit("192.0.2.1") and counts.admit("192.0.2.1")
    assert not counts.admit("192.0.2.1")
    assert counts.admit("192.0.2.2")
    assert counts.refused == 1


def test_a_connection_that_leaves_makes_room_and_an_idle_address_is_forgotten() -> None:
    """After one of two connections leaves the address is admitted again; when all leave it holds no entry."""
    counts = PeerCounts(2)
    counts.admit("192.0.2.1")
    counts.admit("192.0.2.1")
    counts.leave("192.0.2.1")
    assert counts.admit("192.0.2.1")
    counts.leave("192.0.2.1")
    counts.leave("192.0.2.1")
    assert dict(counts.open) == {}


@given(st.lists(st.tuples(st.booleans(), st.sampled_from(["a", "b", "c"])), max_size=200), st.integers(1, 5))
def test_no_address_ever_holds_more_than_the_cap(steps: list[tuple[bool, str]], cap: int) -> None:
    """Whatever the order of arrivals and departures (departures only of admitted connections), no address
    holds more than `cap` and every count is positive."""
    counts, held = PeerCounts(cap), {"a": 0, "b": 0, "c": 0}
    for arrive, ip in steps:
        if arrive and counts.admit(ip):
            held[ip] += 1
        elif not arrive and held[ip] > 0:
            counts.leave(ip)
            held[ip] -= 1
        assert all(0 < n <= cap for n in counts.open.values())
        assert {k: v for k, v in held.items() if v} == dict(counts.open)


def test_many_addresses_of_one_ipv6_64_are_counted_as_one() -> None:
    """Every address of one /64 shares one count (a host owns its /64), another /64 has its own."""
    counts = PeerCounts(3)
    admitted = [counts.admit(f"2001:db8:1:2::{i:x}") for i in range(1, 10)]
    assert admitted == [True] * 3 + [False] * 6
    assert dict(counts.open) == {"2001:db8:1:2::/64": 3}
    assert counts.admit("2001:db8:1:3::1")


def test_ipv4_is_counted_per_address_by_default_and_per_prefix_when_set() -> None:
    """At /32 each IPv4 address has its own count (keyed by the address), at /24 a whole network shares one;
    an IPv4-mapped IPv6 address counts as the IPv4 address it carries."""
    assert peer_key("192.0.2.7") == "192.0.2.7"
    assert peer_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert peer_key("192.0.2.7", ipv4_prefix=24) == "192.0.2.0/24"
    assert peer_key("::1", ipv6_prefix=128) == "::1"
    assert peer_key("unknown") == "unknown"
    counts = PeerCounts(1, ipv4_prefix=24)
    assert counts.admit("192.0.2.1") and not counts.admit("::ffff:192.0.2.200")


def test_a_ticket_is_given_back_exactly_once() -> None:
    """A connection's ticket frees its place and its half-open count once, however many paths give it back."""
    limits = Limits(max_connections=2, max_streams=1, max_header_bytes=1024, retry_always=False, retry_threshold=0,
                    ack_delay_s=0.0, per_ip=PeerCounts(5))
    admission = Admission(limits)
    ticket = admission.enter("192.0.2.1", half_open=True)
    assert isinstance(ticket, Ticket) and (admission.open, admission.half_open) == (1, 1)
    admission.handshake_done(ticket)
    admission.handshake_done(ticket)
    assert admission.half_open == 0
    assert admission.leave(ticket) and not admission.leave(ticket)
    assert admission.open == 0 and dict(limits.per_ip.open) == {}


def test_admission_refuses_over_the_listener_limit_then_over_the_per_address_cap() -> None:
    """A full listener refuses with `limit`; a network at its cap with `per_ip`; shutdown (0) refuses all."""
    limits = Limits(max_connections=2, max_streams=1, max_header_bytes=1024, retry_always=False, retry_threshold=0,
                    ack_delay_s=0.0, per_ip=PeerCounts(1))
    admission = Admission(limits)
    assert isinstance(admission.enter("192.0.2.1"), Ticket)
    assert admission.enter("192.0.2.1") == "per_ip"
    assert isinstance(admission.enter("192.0.2.2"), Ticket)
    assert admission.enter("192.0.2.3") == "limit"
    limits.max_connections = 0
    assert Admission(limits).enter("192.0.2.9") == "limit"
