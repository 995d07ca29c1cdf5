"""Choosing a backend for one request: p2c, round robin, least outstanding, consistent hash.

All take the candidate list and `now` (for slow-start weights) and return one backend or None;
the only state is the round-robin cursor and an injected random generator, so tests are exact.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Protocol, TypeVar

from services.balancer.core.backends import Backend

POLICIES = ("p2c", "round_robin", "least_outstanding", "hash")


def _unit_hash(key: bytes, vm: str) -> float:
    """A stable number in (0, 1) for a (key, VM) pair."""
    digest = hashlib.blake2b(key + b"\x00" + vm.encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 1) / (2**64 + 2)


T = TypeVar("T")


class Chance(Protocol):
    """What a policy draws from (`random.Random` fits): randomness is passed in, never made here."""

    def random(self) -> float: ...

    def sample(self, population: Sequence[int], k: int) -> list[int]: ...

    def choice(self, seq: Sequence[T]) -> T: ...


class Picker:
    """One policy with its small state (round-robin cursor, random generator)."""

    def __init__(self, policy: str = "p2c", slow_start_s: float = 0.0, *, rng: Chance) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}")
        self.policy = policy
        self.slow_start_s = slow_start_s
        self.rng = rng
        self._cursor = 0

    def pick(self, candidates: Sequence[Backend], now: float, key: bytes = b"") -> Backend | None:
        """The backend for the next request, or None when there is no candidate."""
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        if self.policy == "p2c":
            return self._p2c(candidates, now)
        if self.policy == "round_robin":
            return self._round_robin(candidates, now)
        if self.policy == "least_outstanding":
            return self._least(candidates, now)
        return self._hash(candidates, now, key)

    def _admitted(self, backend: Backend, now: float) -> bool:
        """A VM in slow start takes part in a choice with probability equal to its weight.

        Scaling its load by 1/weight instead (the obvious way) gives it nothing at all while the
        others are idle, since (0 + 1) / weight always loses to 0 + 1, and then a jump at the end
        of the window. Admission makes its share grow with the weight at any load.
        """
        weight = backend.weight(now, self.slow_start_s)
        return weight >= 1.0 or self.rng.random() < weight

    def _p2c(self, candidates: Sequence[Backend], now: float) -> Backend:
        """Two random candidates, each admitted by its slow-start weight; the one with fewer
        outstanding requests wins (ties go to the first drawn); if neither is admitted, the heavier."""
        first, second = self.rng.sample(range(len(candidates)), 2)
        a, b = candidates[first], candidates[second]
        in_a, in_b = self._admitted(a, now), self._admitted(b, now)
        if in_a and in_b:
            return b if b.outstanding < a.outstanding else a
        if in_a or in_b:
            return a if in_a else b
        return b if b.weight(now, self.slow_start_s) > a.weight(now, self.slow_start_s) else a

    def _round_robin(self, candidates: Sequence[Backend], now: float) -> Backend:
        """Next in turn; a VM in slow start is skipped with probability 1 - weight."""
        for _ in range(len(candidates)):
            backend = candidates[self._cursor % len(candidates)]
            self._cursor += 1
            if self.rng.random() < backend.weight(now, self.slow_start_s):
                return backend
        return backend

    def _least(self, candidates: Sequence[Backend], now: float) -> Backend:
        """Fewest outstanding among the admitted (see `_admitted`); ties are broken at random."""
        admitted = [b for b in candidates if self._admitted(b, now)] or list(candidates)
        best = min(b.outstanding for b in admitted)
        tied = [b for b in admitted if b.outstanding == best]
        return tied[0] if len(tied) == 1 else self.rng.choice(tied)

    def _hash(self, candidates: Sequence[Backend], now: float, key: bytes) -> Backend:
        """Weighted rendezvous hashing: only keys of a VM that joins or leaves move."""

        def score(backend: Backend) -> float:
            return -backend.weight(now, self.slow_start_s) / math.log(_unit_hash(key, backend.vm))

        return max(candidates, key=score)
