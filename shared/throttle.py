"""Log lines about bad input, rate-limited per subject: a fuzzer or a confused publisher must not
flood the log (one fuzz pass wrote 27,012 `bus.bad_event` lines), yet nothing may go unseen.

Per key, at most `burst` lines per `period_s`; lines past that are only counted, and the next line
written for the key says how many were left out. Totals are kept for every key, so a service can
report them (`rejected_inputs` merges such totals into the per-subject counts a service exposes as
`quicfleet_rejected_inputs_total`). Keys are bounded: a hostile publisher inventing subjects under a wildcard shares one
overflow key instead of growing the table. Pure: the caller passes `now`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

OVERFLOW_KEY = "(other subjects)"


@dataclass
class Window:
    started: float
    written: int = 0
    dropped: int = 0


@dataclass
class LineThrottle:
    """Decides, per key, whether a line is written now or only counted."""

    burst: int = 5
    period_s: float = 10.0
    max_keys: int = 1000
    windows: dict[str, Window] = field(default_factory=dict)
    totals: Counter[str] = field(default_factory=Counter)

    def admit(self, key: str, now: float) -> int | None:
        """None when this line is to be dropped; else how many lines of `key` were dropped before it."""
        key = self._bounded(key)
        self.totals[key] += 1
        window = self.windows.get(key)
        if window is None or now - window.started >= self.period_s:
            dropped = window.dropped if window is not None else 0
            self.windows[key] = Window(started=now, written=1)
            return dropped
        if window.written < self.burst:
            window.written += 1
            return 0
        window.dropped += 1
        return None

    def _bounded(self, key: str) -> str:
        if key in self.windows or len(self.windows) < self.max_keys:
            return key
        return OVERFLOW_KEY


@dataclass
class Tally:
    """Rejected inputs per key (a subject), counted always and bounded like a throttle's keys."""

    max_keys: int = 1000
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, key: str) -> None:
        if key not in self.counts and len(self.counts) >= self.max_keys:
            key = OVERFLOW_KEY
        self.counts[key] += 1


def rejected_inputs(*totals: Mapping[str, int]) -> dict[str, int]:
    """Per-subject counts of rejected input, summed over several sources (commands, events), sorted by subject."""
    merged: Counter[str] = Counter()
    for counts in totals:
        merged.update(counts)
    return {subject: merged[subject] for subject in sorted(merged) if merged[subject] > 0}
