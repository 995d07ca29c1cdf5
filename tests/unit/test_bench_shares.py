"""The balancer bench's CPU-share check tells a proxy-bound figure from a generator-bound one."""

from __future__ import annotations

import pytest

from bench._shares import Share, bottleneck, describe, per_core


def test_a_saturated_system_under_test_is_not_flagged() -> None:
    """The proxy at 99% of its core is the bottleneck, whatever the others did."""
    sut = Share("balancer", cpu_s=2.97, wall_s=3.0, cores="0")
    others = [Share("h2load", 1.5, 3.0, "1"), Share("caddy backend", 1.5, 3.0, "1")]
    assert bottleneck(sut, others) is None


def test_a_generator_bound_scenario_is_flagged() -> None:
    """Proxy at 60% while generator and backends fill the other core: the figure is the generator's."""
    sut = Share("balancer", cpu_s=1.8, wall_s=3.0, cores="0")
    others = [Share("python generator", 2.1, 3.0, "1"), Share("python backends", 0.84, 3.0, "1")]
    verdict = bottleneck(sut, others)
    assert verdict is not None
    assert "60%" in verdict and "core 1 at 98%" in verdict


def test_an_idle_system_with_idle_others_is_not_flagged() -> None:
    """One request in flight leaves every process mostly idle: nobody is a bottleneck to flag."""
    sut = Share("balancer", 0.9, 3.0, "0")
    assert bottleneck(sut, [Share("h2load", 0.3, 3.0, "1"), Share("backend", 0.3, 3.0, "1")]) is None


def test_shares_are_per_core_of_their_affinity() -> None:
    """A process allowed two cores that used one core's worth is at 50%."""
    assert Share("workers", 3.0, 3.0, "0,1").share == pytest.approx(0.5)
    assert per_core([Share("a", 1.0, 2.0, "1"), Share("b", 1.0, 2.0, "1")]) == {"1": pytest.approx(1.0)}
    assert describe([Share("a", 1.0, 2.0, "1")]) == "a 50% (core 1)"


def test_worker_scaling_is_planned_only_with_cores_to_spare() -> None:
    """Two cores cannot compare N workers with one; sixteen try 1, 2, 4 and 8 with half the cores for load."""
    from bench.balancer import worker_plan

    assert worker_plan([0, 1]) == []
    plan = worker_plan(list(range(16)))
    assert [n for n, _, _ in plan] == [1, 2, 4, 8]
    assert plan[-1][1] == "0,1,2,3,4,5,6,7" and plan[-1][2] == "8,9,10,11,12,13,14,15"
    assert [n for n, _, _ in worker_plan([0, 1, 2, 3])] == [1, 2]


def test_rounds_whose_baseline_was_not_saturated_are_left_out_of_the_ratios() -> None:
    """A round where the baseline used under 95% of its core is flagged and its ratio is not counted."""
    from bench._ratios import baseline_flags, ratios

    peer = [{"rps": 6400.0, "sut_share": 0.92}, {"rps": 4100.0, "sut_share": 0.99}]
    mine = [{"rps": 6000.0}, {"rps": 4000.0}]
    assert ratios(mine, peer, "rps") == [4000.0 / 4100.0]
    flags = baseline_flags("caddy", peer)
    assert len(flags) == 1 and "round 1" in flags[0] and "92%" in flags[0]


def test_when_no_baseline_round_was_saturated_every_round_counts_and_the_report_says_so() -> None:
    """With no saturated baseline round the ratios use them all, and a line says the figures flatter the rest."""
    from bench._ratios import baseline_flags, ratios

    peer = [{"cpu_us": 100.0, "sut_share": 0.9}, {"cpu_us": 110.0, "sut_share": 0.8}]
    mine = [{"cpu_us": 200.0}, {"cpu_us": 220.0}]
    assert ratios(mine, peer, "cpu_us", invert=True) == [0.5, 0.5]
    assert any("NO round" in line for line in baseline_flags("caddy", peer))
