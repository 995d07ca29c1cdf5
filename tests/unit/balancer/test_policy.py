"""Backend choice: spread, load awareness, slow start and consistent-hash stability."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from services.balancer.core.backends import Backend
from services.balancer.core.health import Health, HealthPolicy
from services.balancer.core.policy import Picker


def _backends(n: int, ready_since: float = -1000.0) -> list[Backend]:
    return [Backend(f"vm-{i}", "127.0.0.1", 9000 + i, ready_since, Health(HealthPolicy())) for i in range(n)]


@pytest.mark.parametrize("policy", ["p2c", "round_robin", "least_outstanding"])
def test_policies_spread_evenly_over_idle_backends(policy: str) -> None:
    """With equal load every policy gives each of four backends roughly a quarter of 4000 picks."""
    backends = _backends(4)
    picker = Picker(policy, rng=random.Random(1))
    counts = Counter(picker.pick(backends, now=0.0).vm for _ in range(4000))  # type: ignore[union-attr]
    assert set(counts) == {b.vm for b in backends}
    assert all(800 < n < 1200 for n in counts.values()), counts


def test_round_robin_takes_turns_exactly() -> None:
    """Round robin without slow start cycles through the backends in order."""
    backends = _backends(3)
    picker = Picker("round_robin", rng=random.Random(1))
    assert [picker.pick(backends, 0.0).vm for _ in range(6)] == ["vm-0", "vm-1", "vm-2"] * 2  # type: ignore[union-attr]


def test_p2c_never_picks_the_busiest_of_two() -> None:
    """Of two backends, power of two choices always picks the one with fewer outstanding requests."""
    idle, busy = _backends(2)
    busy.outstanding = 10
    picker = Picker("p2c", rng=random.Random(3))
    assert {picker.pick([idle, busy], 0.0).vm for _ in range(200)} == {"vm-0"}  # type: ignore[union-attr]


def test_p2c_avoids_a_loaded_backend_among_many() -> None:
    """A backend with many outstanding requests gets far fewer picks than idle ones under p2c."""
    backends = _backends(4)
    backends[0].outstanding = 50
    picker = Picker("p2c", rng=random.Random(5))
    counts = Counter(picker.pick(backends, 0.0).vm for _ in range(4000))  # type: ignore[union-attr]
    assert counts["vm-0"] == 0


def test_least_outstanding_picks_the_minimum() -> None:
    """Least outstanding returns the backend with the fewest requests in flight."""
    backends = _backends(3)
    backends[0].outstanding, backends[1].outstanding, backends[2].outstanding = 5, 1, 3
    assert Picker("least_outstanding", rng=random.Random()).pick(backends, 0.0) is backends[1]


def test_no_candidate_gives_none() -> None:
    """An empty candidate list yields no backend for every policy."""
    for policy in ("p2c", "round_robin", "least_outstanding", "hash"):
        assert Picker(policy, rng=random.Random()).pick([], 0.0) is None


def test_unknown_policy_is_refused() -> None:
    """A policy name outside the known four raises ValueError."""
    with pytest.raises(ValueError, match="unknown policy"):
        Picker("random", rng=random.Random())


def test_slow_start_ramps_a_new_backend_share() -> None:
    """A VM that just became ready gets a small share, which grows to an even one over the window."""
    old = _backends(3)
    new = Backend("vm-new", "127.0.0.1", 9100, 100.0, Health(HealthPolicy()))
    picker = Picker("round_robin", slow_start_s=10.0, rng=random.Random(7))
    early = Counter(picker.pick([*old, new], now=100.5).vm for _ in range(4000))  # type: ignore[union-attr]
    later = Counter(picker.pick([*old, new], now=200.0).vm for _ in range(4000))  # type: ignore[union-attr]
    assert early["vm-new"] < 200
    assert 800 < later["vm-new"] < 1200


def test_hash_is_stable_for_a_key() -> None:
    """The same key maps to the same backend every time."""
    backends = _backends(5)
    picker = Picker("hash", rng=random.Random())
    assert len({picker.pick(backends, 0.0, b"client-42").vm for _ in range(50)}) == 1  # type: ignore[union-attr]


def _mapping(picker: Picker, backends: list[Backend], keys: list[bytes]) -> dict[bytes, str]:
    return {key: picker.pick(backends, 0.0, key).vm for key in keys}  # type: ignore[union-attr]


def test_hash_moves_only_keys_of_a_leaving_backend() -> None:
    """When a VM leaves, only the keys it owned move; every other key keeps its backend."""
    backends = _backends(5)
    keys = [f"key-{i}".encode() for i in range(2000)]
    picker = Picker("hash", rng=random.Random())
    before = _mapping(picker, backends, keys)
    after = _mapping(picker, backends[:2] + backends[3:], keys)
    moved = {k for k in keys if before[k] != after[k]}
    assert moved == {k for k in keys if before[k] == "vm-2"}
    assert 300 < len(moved) < 500


def test_hash_moves_about_one_share_when_a_backend_joins() -> None:
    """When a fifth VM joins, about a fifth of the keys move, all of them to the new VM."""
    backends = _backends(5)
    keys = [f"key-{i}".encode() for i in range(2000)]
    picker = Picker("hash", rng=random.Random())
    before = _mapping(picker, backends[:4], keys)
    after = _mapping(picker, backends, keys)
    moved = [k for k in keys if before[k] != after[k]]
    assert all(after[k] == "vm-4" for k in moved)
    assert 300 < len(moved) < 500


def _share_of_new(policy: str, seconds_in: float, outstanding: int, picks: int = 6000) -> float:
    """The share of picks a VM ready for `seconds_in` of a 10 s slow start gets beside three old
    VMs, all holding `outstanding` requests (0: an idle fleet; more: under load)."""
    old = _backends(3)
    new = Backend("vm-new", "127.0.0.1", 9100, 100.0, Health(HealthPolicy()))
    for backend in (*old, new):
        backend.outstanding = outstanding
    picker = Picker(policy, slow_start_s=10.0, rng=random.Random(11))
    counts = Counter(picker.pick([*old, new], now=100.0 + seconds_in).vm for _ in range(picks))  # type: ignore[union-attr]
    return counts["vm-new"] / picks


@pytest.mark.parametrize("policy", ["p2c", "least_outstanding", "round_robin"])
@pytest.mark.parametrize("outstanding", [0, 8])
def test_slow_start_share_grows_with_the_weight_at_idle_and_under_load(policy: str, outstanding: int) -> None:
    """Across the window a new VM's share rises step by step from a few percent to an even quarter,
    whether the fleet is idle or busy (it used to get 0 % under p2c until the window ended)."""
    shares = [_share_of_new(policy, seconds, outstanding) for seconds in (1.0, 3.0, 6.0, 9.0, 20.0)]
    assert 0.005 < shares[0] < 0.08, shares
    assert shares == sorted(shares), shares
    assert 0.2 < shares[-1] < 0.3, shares
