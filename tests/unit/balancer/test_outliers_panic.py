"""Passive ejection on 5xx responses and the panic threshold of the backend table (pure core)."""

from __future__ import annotations

from services.balancer.core.backends import BackendTable
from services.balancer.core.health import Health, HealthPolicy


def test_consecutive_5xx_eject_for_the_base_time() -> None:
    """Three 5xx responses in a row (threshold 3) eject the backend for ejection_base_s."""
    health = Health(HealthPolicy(ejection_consecutive_5xx=3, ejection_base_s=5))
    assert not health.server_error(1.0)
    assert not health.server_error(1.1)
    assert health.server_error(1.2)
    assert not health.usable(6.0) and health.usable(6.3)
    assert health.ejections == 1


def test_a_good_response_ends_the_5xx_streak() -> None:
    """A response below 500 between 5xx responses keeps the backend in."""
    health = Health(HealthPolicy(ejection_consecutive_5xx=2))
    for now in range(5):
        assert not health.server_error(float(now))
        health.request_succeeded(now + 0.5)
    assert health.usable(10.0)


def test_5xx_ejection_can_be_turned_off() -> None:
    """With ejection_consecutive_5xx=0, no number of 5xx responses ejects."""
    health = Health(HealthPolicy(ejection_consecutive_5xx=0))
    assert not any(health.server_error(float(n)) for n in range(100))
    assert health.usable(100.0)


def test_5xx_and_connection_failures_are_separate_streaks() -> None:
    """A 5xx ends the connection-failure streak (the VM answered), and failures do not add to the 5xx one."""
    health = Health(HealthPolicy(ejection_consecutive=2, ejection_consecutive_5xx=2))
    assert not health.request_failed(1.0)
    assert not health.server_error(1.1)
    assert not health.request_failed(1.2)
    assert health.request_failed(1.3)  # the second failure in a row since the 5xx
    assert not health.usable(1.4)


def test_5xx_ejections_double_like_the_others() -> None:
    """A second 5xx ejection lasts twice the first: both kinds share the ejection count."""
    health = Health(HealthPolicy(ejection_consecutive=1, ejection_consecutive_5xx=1, ejection_base_s=5))
    assert health.request_failed(0.0) and health.ejected_until == 5.0
    assert health.server_error(6.0) and health.ejected_until == 16.0


def _table(count: int, threshold: float) -> BackendTable:
    table = BackendTable(HealthPolicy(fall=1), panic_threshold=threshold)
    for n in range(count):
        table.ready(f"vm-{n}", f"127.0.0.1:{9000 + n}", now=0.0)
    return table


def _unhealthy(table: BackendTable, *vms: str) -> None:
    for vm in vms:
        backend = table.get(vm)
        assert backend is not None
        backend.health.check_failed()


def test_below_the_threshold_every_non_draining_vm_is_a_candidate() -> None:
    """With 1 of 4 usable (under 50 %), the table panics: the three unusable VMs get requests, the draining one not."""
    table = _table(5, 0.5)
    table.drain("vm-4")
    _unhealthy(table, "vm-0", "vm-1", "vm-2")
    assert [b.vm for b in table.candidates(1.0)] == ["vm-0", "vm-1", "vm-2", "vm-3"]
    assert table.panic


def test_at_the_threshold_only_usable_vms_are_candidates() -> None:
    """With exactly half usable (threshold 50 %), there is no panic: only the healthy VMs are candidates."""
    table = _table(4, 0.5)
    _unhealthy(table, "vm-0", "vm-1")
    assert [b.vm for b in table.candidates(1.0)] == ["vm-2", "vm-3"]
    assert not table.panic


def test_a_single_ejected_vm_still_gets_requests_in_panic() -> None:
    """The only VM, ejected by 5xx, stays a candidate under panic (503 for everyone would serve no one)."""
    table = BackendTable(HealthPolicy(ejection_consecutive_5xx=1), panic_threshold=0.5)
    backend = table.ready("vm-a", "127.0.0.1:9000", now=0.0)
    backend.health.server_error(1.0)
    assert table.candidates(1.5) == [backend] and table.panic


def test_panic_threshold_zero_never_panics() -> None:
    """Threshold 0 turns panic off: with every VM unusable there is no candidate."""
    table = _table(3, 0.0)
    _unhealthy(table, "vm-0", "vm-1", "vm-2")
    assert table.candidates(1.0) == [] and not table.panic


def test_panic_ends_when_vms_recover() -> None:
    """The panic flag follows the table: it clears once enough VMs are usable again."""
    table = _table(2, 0.75)
    _unhealthy(table, "vm-0")
    table.candidates(1.0)
    assert table.panic
    backend = table.get("vm-0")
    assert backend is not None
    backend.health.check_passed()
    backend.health.check_passed()
    assert len(table.candidates(2.0)) == 2 and not table.panic


def test_only_draining_vms_give_no_candidates_and_no_panic() -> None:
    """Draining VMs never count: with all of them draining there is nobody to panic over."""
    table = _table(2, 0.5)
    table.drain("vm-0")
    table.drain("vm-1")
    assert table.candidates(1.0) == [] and not table.panic
