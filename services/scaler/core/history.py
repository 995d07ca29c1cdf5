"""The fleet's load history: one mean and one peak per minute for the last 14 days (pure).

The forecast (`forecast.py`) reads earlier days at the same time of day, so the history must
reach back days, and it must be small: it is persisted apart from the desired state (a KV key
of its own, `services/scaler/historystore.py`), so a new leader starts with it. A minute is the
grain: a daily rise takes minutes, a boot seconds, and 14 days of minutes is 20,160 pairs.

Each load snapshot adds to the open minute (a sum, a count and a peak); when a snapshot falls
in a later minute the open one closes into `means`/`peaks`. Minutes nobody saw (a scaler down
for an hour, a fleet younger than the history) are None: the forecast skips them instead of
reading them as zero load.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

MINUTE_S = 60.0
DAY_MINUTES = 1440
KEPT_DAYS = 14
KEPT_MINUTES = KEPT_DAYS * DAY_MINUTES
"""The most minutes kept: 14 days, as AWS's predictive scaling reads; older ones are dropped first."""

Slot = float | None


@dataclass(frozen=True)
class LoadHistory:
    """Closed minutes (`first` is the minute index of `means[0]`), and the minute still open.

    A minute index is floor(time / 60): minute 0 is the epoch's, so a day is 1440 minutes and the
    same time on an earlier day is `minute - 1440 * days`. `signal` is the unit the values are in;
    a policy that changes signal starts the history afresh (requests/s say nothing of seconds).
    """

    signal: str = ""
    first: int = 0
    means: tuple[Slot, ...] = ()
    peaks: tuple[Slot, ...] = ()
    open_minute: int | None = None
    open_sum: float = 0.0
    open_count: int = 0
    open_peak: float = 0.0

    @property
    def end(self) -> int:
        """The minute after the last closed one."""
        return self.first + len(self.means)

    def mean(self, minute: int) -> Slot:
        """The mean load of a closed `minute`, None when unseen or outside the history."""
        index = minute - self.first
        return self.means[index] if 0 <= index < len(self.means) else None

    def peak(self, minute: int) -> Slot:
        """The highest load seen in a closed `minute`, None when unseen or outside the history."""
        index = minute - self.first
        return self.peaks[index] if 0 <= index < len(self.peaks) else None

    def seen_minutes(self) -> int:
        """How many closed minutes hold data (how much history the forecast has to go on)."""
        return sum(1 for value in self.means if value is not None)


def minute_of(t: float) -> int:
    return int(t // MINUTE_S)


def record(history: LoadHistory, signal: str, t: float, value: float) -> tuple[LoadHistory, int | None]:
    """Add one load snapshot taken at `t`; also returns the minute it closed, if one closed.

    A snapshot older than the open minute is dropped (news arrives in order; a late one must not
    reopen a closed minute). The closed minute is what the forecast scores itself against.
    """
    if signal != history.signal:
        history = LoadHistory(signal=signal)
    minute = minute_of(t)
    if history.open_minute is None:
        return replace(history, open_minute=minute, open_sum=value, open_count=1, open_peak=value), None
    if minute < history.open_minute:
        return history, None
    if minute == history.open_minute:
        return replace(history, open_sum=history.open_sum + value, open_count=history.open_count + 1,
                       open_peak=max(history.open_peak, value)), None
    closed = history.open_minute
    shut = close(history, closed, history.open_sum / history.open_count, history.open_peak)
    return replace(shut, open_minute=minute, open_sum=value, open_count=1, open_peak=value), closed


def close(history: LoadHistory, minute: int, mean: float, peak: float) -> LoadHistory:
    """The history with `minute` closed at (`mean`, `peak`): gaps before it are None, the oldest beyond 14 days go."""
    if not history.means:
        return replace(history, first=minute, means=(mean,), peaks=(peak,))
    if minute < history.end:
        return history
    gap = min(minute - history.end, KEPT_MINUTES)
    means = (*history.means, *([None] * gap), mean)
    peaks = (*history.peaks, *([None] * gap), peak)
    first = minute + 1 - len(means)
    drop = max(0, len(means) - KEPT_MINUTES)
    return replace(history, first=first + drop, means=means[drop:], peaks=peaks[drop:])


def merged(mine: LoadHistory, stored: LoadHistory) -> LoadHistory:
    """Two replicas' histories as one: each minute from `mine` where it has one, else from `stored`.

    A new leader has what it witnessed as a follower (maybe since its own start only) and what
    the last leader persisted (maybe minutes old): together they have both the old days and the
    latest minutes.
    """
    if not stored.means or (stored.signal != mine.signal and mine.means):
        return mine
    if not mine.means:
        return replace(stored, open_minute=mine.open_minute or stored.open_minute, open_sum=mine.open_sum,
                       open_count=mine.open_count, open_peak=mine.open_peak) if mine.open_minute else stored
    first, end = min(mine.first, stored.first), max(mine.end, stored.end)
    first = max(first, end - KEPT_MINUTES)
    means = tuple(_pick(mine.mean(m), stored.mean(m)) for m in range(first, end))
    peaks = tuple(_pick(mine.peak(m), stored.peak(m)) for m in range(first, end))
    return replace(mine, first=first, means=means, peaks=peaks)


def _pick(mine: Slot, stored: Slot) -> Slot:
    return mine if mine is not None else stored


def from_series(signal: str, start: float, values: Iterable[float], step_s: float = 1.0) -> LoadHistory:
    """A history built from a series sampled every `step_s` seconds from `start` (the bench's history days)."""
    history, t = LoadHistory(signal=signal), start
    for value in values:
        history, _ = record(history, signal, t, value)
        t += step_s
    return history
