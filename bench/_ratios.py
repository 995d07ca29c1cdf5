"""Ratios between systems measured in the same rounds, counting only rounds whose baseline was saturated (pure).

A ratio against a baseline that was not at its limit flatters every system beside it: a Caddy at 92% of its
core while the balancers sat at 97% made them look faster than they are (its req/s moved 6.4k -> 4.1k
across rounds). So a round counts only when the baseline used at least `BASELINE_BUSY` of its core; the
report flags the others. CPU per request does not depend on saturation and is printed beside req/s.
"""

from __future__ import annotations

import statistics
from typing import Any

BASELINE_BUSY = 0.95
"""The share of its core the baseline must have used for a round's ratios to count."""

Round = dict[str, Any]


def counted(peer_rounds: list[Round]) -> list[bool]:
    """Which rounds count: those whose baseline was saturated; every round when none was (the report says so)."""
    saturated = [r.get("sut_share", 1.0) >= BASELINE_BUSY for r in peer_rounds]
    return saturated if any(saturated) else [True] * len(peer_rounds)


def ratios(rounds: list[Round], peer_rounds: list[Round], key: str, invert: bool = False) -> list[float]:
    """`rounds[i][key] / peer_rounds[i][key]` (or its inverse) for every counted round; nan where one is 0."""
    out = []
    for mine, peer, keep in zip(rounds, peer_rounds, counted(peer_rounds), strict=True):
        if keep:
            a, b = (peer[key], mine[key]) if invert else (mine[key], peer[key])
            out.append(a / b if a and b else float("nan"))
    return out


def spread(values: list[float]) -> str:
    """`median [min-max]` of the values that are numbers, `-` when none is."""
    good = [v for v in values if v == v]
    if not good:
        return "-"
    return f"{statistics.median(good):.2f} [{min(good):.2f}-{max(good):.2f}]"


def baseline_flags(label: str, peer_rounds: list[Round]) -> list[str]:
    """One line per round whose baseline stayed under `BASELINE_BUSY` of its core (its ratios are left out)."""
    lines = []
    for index, peer in enumerate(peer_rounds, start=1):
        share = peer.get("sut_share", 1.0)
        if share < BASELINE_BUSY:
            lines.append(f"FLAGGED round {index}: {label} at {share:.0%} of its core (under {BASELINE_BUSY:.0%}): "
                         "not saturated, so its ratios are left out of the medians")
    if peer_rounds and len(lines) == len(peer_rounds):
        lines.append("NO round had a saturated baseline: the ratios above use every round and flatter the "
                     "systems beside it; rerun on a quieter machine")
    return lines
