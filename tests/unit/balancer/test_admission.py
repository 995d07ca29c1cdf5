"""The per-address connection count: a cap per client address, forgotten once an address holds nothing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.balancer.core.admission import PeerCounts


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
