"""Choosing a backend for one request: p2c, round robin, least outstanding, consistent hash.

All take the candidate list and `now` (for slow-start weights) and return one backend or None;
the only state is the round-robin cursor and an injected random generator, so tests are exact.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence

from services.balancer.core.backends import Backend

POLICIES = ("p2c", "round_robin", "least_outstanding", "hash")


def _load(backend: Backend, now: float, slow_start_s: float) -> float:
    """Outstanding requests scaled up while the VM is in slow start."""
    return (backend.outstanding + 1) / backend.weight(now, slow_start_s)


def _unit_hash(key: bytes, vm: str) -> float:
    """A stable number in (0, 1) for a (key, VM) pair."""
    digest = hashlib.blake2b(key + b"\x00" + vm.encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 1) / (2**64 + 2)


class Picker:
    """One policy with its small state (round-robin cursor, random generator)."""

    def __init__(self, policy: str = "p2c", slow_start_s: float = 0.0, rng: random.Random | None = None) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}")
        self.policy = policy
        self.slow_start_s = slow_start_s
        self.rng = rng or random.Random()
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

    def _p2c(self, candidates: Sequence[Backend], now: float) -> Backend:
        """Two random candidates; the less loaded one wins (ties go to the first drawn)."""
        first, second = self.rng.sample(range(len(candidates)), 2)
        a, b = candidates[first], candidates[second]
        return b if _load(b, now, self.slow_start_s) < _load(a, now, self.slow_start_s) else a

    def _round_robin(self, candidates: Sequence[Backend], now: float) -> Backend:
        """Next in turn; a VM in slow start is skipped with probability 1 - weight."""
        for _ in range(len(candidates)):
            backend = candidates[self._cursor % len(candidates)]
            self._cursor += 1
            if self.rng.random() < backend.weight(now, self.slow_start_s):
                return backend
        return backend

    def _least(self, candidates: Sequence[Backend], now: float) -> Backend:
        """Fewest outstanding (weighted); ties are broken at random so load spreads."""
        loads = [_load(b, now, self.slow_start_s) for b in candidates]
        best = min(loads)
        tied = [b for b, load in zip(candidates, loads, strict=True) if load == best]
        return tied[0] if len(tied) == 1 else self.rng.choice(tied)

    def _hash(self, candidates: Sequence[Backend], now: float, key: bytes) -> Backend:
        """Weighted rendezvous hashing: only keys of a VM that joins or leaves move."""

        def score(backend: Backend) -> float:
            return -backend.weight(now, self.slow_start_s) / math.log(_unit_hash(key, backend.vm))

        return max(candidates, key=score)
