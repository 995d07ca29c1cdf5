"""The backend health state machine: rise/fall of active checks and growing passive ejection."""

from __future__ import annotations

from services.balancer.core.health import Health, HealthPolicy


def test_new_backend_starts_usable() -> None:
    """A backend the provisioner announced is usable before its first check."""
    assert Health(HealthPolicy()).usable(0.0)


def test_fall_failed_checks_make_it_unhealthy_and_rise_passes_bring_it_back() -> None:
    """Two failed checks (fall=2) take a backend out; it returns only after three passes (rise=3)."""
    health = Health(HealthPolicy(rise=3, fall=2))
    assert health.check_failed() is False and health.usable(0.0)
    assert health.check_failed() is True and not health.usable(0.0)
    assert health.check_passed() is False
    assert health.check_passed() is False and not health.usable(0.0)
    assert health.check_passed() is True and health.usable(0.0)


def test_a_pass_between_failures_resets_the_fall_count() -> None:
    """Alternating results never reach the fall threshold."""
    health = Health(HealthPolicy(fall=2))
    for _ in range(5):
        health.check_failed()
        health.check_passed()
    assert health.usable(0.0)


def test_consecutive_request_failures_eject_for_the_base_time() -> None:
    """Three failed requests in a row eject the backend for ejection_base_s, then it is usable again."""
    health = Health(HealthPolicy(ejection_consecutive=3, ejection_base_s=5, ejection_max_s=60))
    assert not health.request_failed(10.0)
    assert not health.request_failed(10.1)
    assert health.request_failed(10.2)
    assert not health.usable(14.0)
    assert health.usable(15.3)


def test_a_success_resets_the_failure_streak() -> None:
    """A success between failures keeps the backend in."""
    health = Health(HealthPolicy(ejection_consecutive=2))
    health.request_failed(1.0)
    health.request_succeeded(1.1)
    assert not health.request_failed(1.2)
    assert health.usable(1.3)


def test_ejection_time_doubles_and_is_capped() -> None:
    """Each ejection lasts twice the previous one, up to ejection_max_s."""
    health = Health(HealthPolicy(ejection_consecutive=1, ejection_base_s=5, ejection_max_s=30))
    durations = []
    now = 0.0
    for _ in range(5):
        assert health.request_failed(now)
        durations.append(health.ejected_until - now)
        now = health.ejected_until
    assert durations == [5, 10, 20, 30, 30]


def test_failures_during_an_ejection_do_not_extend_it() -> None:
    """Requests that were in flight when the backend was ejected do not count again."""
    health = Health(HealthPolicy(ejection_consecutive=1, ejection_base_s=5))
    health.request_failed(0.0)
    until = health.ejected_until
    assert not health.request_failed(1.0)
    assert health.ejected_until == until


def test_a_long_quiet_spell_forgives_past_ejections() -> None:
    """A success long after the last failure resets the ejection time to the base."""
    health = Health(HealthPolicy(ejection_consecutive=1, ejection_base_s=5, ejection_max_s=60))
    health.request_failed(0.0)
    health.request_succeeded(100.0)
    health.request_failed(200.0)
    assert health.ejected_until == 205.0
