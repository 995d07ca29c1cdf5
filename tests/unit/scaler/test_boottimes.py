"""Boot and resume times: measured per host from the VMs' state changes, read back as a percentile lead."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.scaler.core.boottimes import (
    DEFAULT_S,
    KEEP,
    NO_LEAD,
    BootTimes,
    Kind,
    lead,
    note,
    percentile,
    record,
)
from services.scaler.core.track import on_created, on_vm_event
from shared.contract.events import VmState
from shared.contract.events import VmStateChanged as Changed
from shared.contract.provisioning import VmRecord
from tests.unit.scaler.fleets import NOW, fleet

S = VmState
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _times(**hosts: list[float]) -> BootTimes:
    """Boot samples per host (keyword = host name; `<host>_resume` for resume samples)."""
    times = BootTimes()
    for key, values in hosts.items():
        host, _, kind = key.partition("_")
        for value in values:
            times = record(times, host, Kind.RESUME if kind == "resume" else Kind.BOOT, value)
    return times


@pytest.mark.parametrize(("values", "share", "expected"), [
    ([10.0], 0.9, 10.0),
    ([float(v) for v in range(1, 11)], 0.9, 9.0),
    ([float(v) for v in range(1, 11)], 0.5, 5.0),
    ([float(v) for v in range(1, 11)], 1.0, 10.0),
    ([3.0, 1.0, 2.0], 0.01, 1.0),
])
def test_percentile_is_the_nearest_rank(values: list[float], share: float, expected: float) -> None:
    """The p-th percentile is the smallest measurement with at least p of them at or below it."""
    assert percentile(values, share) == expected


@pytest.mark.parametrize(("times", "share", "pooled", "hosts", "seconds", "kind", "words"), [
    (BootTimes(), 0.9, set(), ["h1"], DEFAULT_S[Kind.BOOT], Kind.BOOT, "default 20 s boot, none measured yet"),
    (BootTimes(), 0.9, {"h1"}, ["h1"], DEFAULT_S[Kind.RESUME], Kind.RESUME, "default 3 s resume"),
    (_times(h1=[float(v) for v in range(11, 21)]), 0.9, set(), ["h1"], 19.0, Kind.BOOT, "p90 of 10 boots on h1"),
    (_times(h1=[float(v) for v in range(11, 21)]), 0.5, set(), ["h1"], 15.0, Kind.BOOT, "p50 of 10 boots on h1"),
    (_times(h1=[12.0], h2=[30.0]), 0.9, set(), ["h1", "h2"], 30.0, Kind.BOOT, "on h2"),
    (_times(h1=[12.0]), 0.9, set(), ["h1", "h3"], 12.0, Kind.BOOT, "on h1"),
    (_times(h1=[12.0]), 0.9, set(), ["h3"], 12.0, Kind.BOOT, "p90 of 1 boots, all hosts"),
    (_times(h1=[12.0]), 0.9, set(), [], 12.0, Kind.BOOT, "all hosts"),
    (_times(h1=[40.0], h2_resume=[2.0, 4.0]), 0.9, {"h2"}, ["h1", "h2"], 4.0, Kind.RESUME, "p90 of 2 resumes on h2"),
    (_times(h1=[40.0]), 0.0, set(), ["h1"], 0.0, Kind.BOOT, "no lead"),
])
def test_the_lead_is_the_percentile_of_the_wait_the_next_scale_out_faces(
    times: BootTimes, share: float, pooled: set[str], hosts: list[str], seconds: float, kind: Kind, words: str,
) -> None:
    """A resume where a pooled VM is spare, else a boot; the slowest candidate host; defaults until measured."""
    got = lead(times, share, pooled, hosts)
    assert (got.seconds, got.kind) == (seconds, kind)
    assert words in got.basis


def test_a_boot_is_timed_from_the_first_news_to_ready_and_a_pool_boot_to_pooled() -> None:
    """Requested at 100 and ready at 118 is an 18 s boot; booted for the pool at 0 and pooled at 16, a 16 s one."""
    times = note(BootTimes(), "a", "h1", None, S.REQUESTED, 100.0)
    times = note(times, "a", "h1", S.REQUESTED, S.BOOTING, 105.0)
    times = note(times, "a", "h1", S.BOOTING, S.READY, 118.0)
    times = note(times, "p", "h1", None, S.BOOTING, 0.0)
    times = note(times, "p", "h1", S.BOOTING, S.POOLED, 16.0)
    assert times.samples == {("h1", Kind.BOOT): (18.0, 16.0)}
    assert times.timing == {}


def test_a_resume_is_timed_from_leaving_the_pool_to_ready() -> None:
    """Pooled -> booting at 500 -> ready at 503 is a 3 s resume, apart from the boots."""
    times = note(BootTimes(), "p", "h2", None, S.BOOTING, 0.0)
    times = note(times, "p", "h2", S.BOOTING, S.POOLED, 20.0)
    times = note(times, "p", "h2", S.POOLED, S.BOOTING, 500.0)
    times = note(times, "p", "h2", S.BOOTING, S.READY, 503.0)
    assert times.samples == {("h2", Kind.BOOT): (20.0,), ("h2", Kind.RESUME): (3.0,)}


@pytest.mark.parametrize("ending", [S.FAILED, S.DRAINING, S.DESTROYED])
def test_a_vm_that_never_gets_ready_leaves_no_measurement(ending: VmState) -> None:
    """A failed or removed boot stops the clock: no sample, no mark left behind."""
    times = note(BootTimes(), "a", "h1", None, S.REQUESTED, 0.0)
    times = note(times, "a", "h1", S.REQUESTED, ending, 9.0)
    assert times == BootTimes()


def test_a_vm_first_seen_ready_is_not_a_measurement() -> None:
    """A VM a list shows ready (a restart, a takeover) was not watched booting: nothing is recorded."""
    assert note(BootTimes(), "a", "h1", None, S.READY, 50.0) == BootTimes()


def test_only_the_latest_measurements_are_kept_per_host_and_kind() -> None:
    """The history is bounded: the oldest of more than `KEEP` go first."""
    times = _times(h1=[float(v) for v in range(KEEP + 10)])
    assert times.samples[("h1", Kind.BOOT)] == tuple(float(v) for v in range(10, KEEP + 10))


def test_the_reducers_record_boots_and_resumes_from_events_and_replies() -> None:
    """Events time a boot on the local clock; a create reply that takes a pooled VM starts a resume."""
    state = on_vm_event(fleet(0), Changed(vm="a", state=S.REQUESTED, host="h1"), NOW)
    state = on_vm_event(state, Changed(vm="a", state=S.READY, host="h1"), NOW + 17)
    state = on_vm_event(state, Changed(vm="p", state=S.BOOTING, host="h1", request_id="s-e1-p3"), NOW + 20)
    state = on_vm_event(state, Changed(vm="p", state=S.POOLED, host="h1", request_id="s-e1-p3"), NOW + 35)
    taken = VmRecord(vm="p", state=S.POOLED, host="h1", request_id="s-e1-c4", since=T0)
    state = on_created(state, "s-e1-c4", taken, NOW + 100)
    state = on_vm_event(state, Changed(vm="p", state=S.READY, host="h1", request_id="s-e1-c4"), NOW + 102.5)
    assert state.boots.samples == {("h1", Kind.BOOT): (17.0, 15.0), ("h1", Kind.RESUME): (2.5,)}


def test_no_lead_is_zero_seconds() -> None:
    """`boot_lead_percentile` 0 turns the lead off whatever was measured."""
    assert lead(_times(h1=[30.0]), 0.0, {"h1"}, ["h1"]) == NO_LEAD and NO_LEAD.seconds == 0
