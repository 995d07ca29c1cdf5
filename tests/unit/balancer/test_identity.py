"""Identity of backends: the pure verification state, the table's candidates, and membership's UUIDs."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from services.balancer.core.backends import BackendTable
from services.balancer.core.health import HealthPolicy
from services.balancer.core.identity import IdentityState, Verification, describe, identity_of
from services.balancer.core.options import ProxyOptions
from services.balancer.core.policy import Picker
from services.balancer.core.retry import RetryBudget
from services.balancer.proxy.membership import apply_event, apply_listing
from services.balancer.proxy.router import Router
from shared.contract.events import VmState, VmStateChanged
from shared.contract.provisioning import VmList, VmRecord
from tests.support.balancer_fakes import FakeUpstream

UUID = "6f1c1a52-3c57-4d0e-9a51-0c2b8f1d7e01"
OTHER = "0b9d8e7f-1111-4222-8333-944455556666"


def test_a_backend_without_uuid_is_trusted_and_never_checked() -> None:
    """With no UUID to check, every answer matches and a mismatch changes nothing."""
    verification = Verification.of(None)
    assert verification.state is IdentityState.UNCHECKED and verification.trusted
    assert verification.matches(None) and verification.matches(b"anything")
    assert verification.mismatched(b"anything") is False and verification.trusted


def test_a_backend_with_uuid_starts_unverified_and_one_right_check_verifies_it() -> None:
    """A new VM with a UUID is out (and pending a check) until the first check sees that UUID."""
    verification = Verification.of(UUID, rise=3)
    assert not verification.trusted and verification.pending
    assert verification.reason == "identity not verified yet"
    assert verification.confirmed() is True
    assert verification.state is IdentityState.VERIFIED and verification.trusted and not verification.pending
    assert verification.reason is None
    assert verification.confirmed() is False


def test_a_mismatch_takes_it_out_at_once_and_rise_right_checks_bring_it_back() -> None:
    """One wrong answer makes a verified VM untrusted; it is trusted again after `rise` right checks in a row."""
    verification = Verification.of(UUID, rise=2)
    verification.confirmed()
    assert verification.mismatched(OTHER.encode()) is True
    assert not verification.trusted and not verification.pending
    assert verification.reason == f"address answered as another VM ({OTHER})"
    assert verification.confirmed() is False and not verification.trusted
    assert verification.mismatched(None) is True
    assert verification.confirmed() is False
    assert verification.confirmed() is True and verification.trusted


def test_the_same_impostor_again_is_not_news_but_another_one_is() -> None:
    """Repeated answers from one impostor report news once; a different answer is news again."""
    verification = Verification.of(UUID)
    assert verification.mismatched(None) is True
    assert verification.mismatched(None) is False
    assert verification.mismatched(OTHER.encode()) is True
    assert verification.seen == OTHER


def test_a_first_check_that_sees_another_uuid_is_a_mismatch_not_a_verification() -> None:
    """An unverified VM whose first answer is wrong goes to mismatch and then needs `rise` right checks."""
    verification = Verification.of(UUID, rise=2)
    verification.mismatched(OTHER.encode())
    assert verification.confirmed() is False and not verification.trusted
    assert verification.confirmed() is True


def test_expected_uuid_is_compared_as_the_header_carries_it() -> None:
    """The expected bytes are the lower-case UUID, and only exactly those match."""
    verification = Verification.of(UUID.upper())
    assert verification.matches(UUID.encode())
    assert not verification.matches(OTHER.encode()) and not verification.matches(None)


def test_identity_header_is_found_case_blind_and_normalised() -> None:
    """The header name may be in any case (HTTP/1.1), the value is trimmed and lower-cased; absent is None."""
    assert identity_of([(b"content-type", b"text/plain"), (b"X-QuicFleet-VM", b" " + UUID.upper().encode())]) == (
        UUID.encode()
    )
    assert identity_of([(b"content-type", b"text/plain")]) is None
    assert identity_of([(b"x-quicfleet-vmx", UUID.encode())]) is None


def test_what_was_seen_is_described_short_and_printable() -> None:
    """A missing header, an empty one and a hostile value each read safely in a log line."""
    assert describe(None) == "no x-quicfleet-vm header"
    assert describe(b"") == "an empty header"
    assert describe(b"ab\ncd\xff") == "ab?cd?"
    assert len(describe(b"x" * 1000)) == 64


def test_unverified_and_mismatched_backends_are_no_candidates_even_in_panic() -> None:
    """With every other VM unusable (panic), a VM whose identity is not proven still gets no request."""
    table = BackendTable(HealthPolicy(), panic_threshold=1.0)
    honest = table.ready("vm-a", "127.0.0.1:9000", 0.0, identity=UUID)
    impostor = table.ready("vm-b", "127.0.0.1:9001", 0.0, identity=OTHER)
    assert table.candidates(0.0) == []
    honest.verification.confirmed()
    honest.health.healthy = False
    assert table.candidates(0.0) == [honest] and table.panic
    impostor.verification.mismatched(None)
    assert table.candidates(0.0) == [honest]
    assert not impostor.routable(0.0) and not honest.routable(0.0)


def test_ready_again_resets_verification_only_when_address_or_uuid_change() -> None:
    """The same address and UUID keep a verified VM verified; a new UUID or a new address starts unverified."""
    table = BackendTable(HealthPolicy())
    backend = table.ready("vm-a", "127.0.0.1:9000", 0.0, identity=UUID)
    backend.verification.confirmed()
    assert table.ready("vm-a", "127.0.0.1:9000", 1.0, identity=UUID).verification.trusted
    assert table.ready("vm-a", "127.0.0.1:9000", 2.0, identity=OTHER).verification.pending
    table.ready("vm-a", "127.0.0.1:9000", 3.0, identity=OTHER).verification.confirmed()
    moved = table.ready("vm-a", "127.0.0.1:9001", 4.0, identity=OTHER)
    assert moved is not backend and moved.verification.pending
    assert table.ready("vm-a", "127.0.0.1:9001", 5.0, identity=None).routable(5.0)


def _router(identity_check: bool = True) -> Router:
    return Router(
        BackendTable(HealthPolicy()),
        Picker("round_robin", rng=random.Random()),
        RetryBudget(),
        lambda backend: FakeUpstream(),
        ProxyOptions(identity_check=identity_check),
        lambda _over: None,
    )


def _ready(vm: str, uuid: str | None, identity: bool) -> VmStateChanged:
    return VmStateChanged(vm=vm, state=VmState.READY, address="127.0.0.1:9000", uuid=uuid, identity=identity)


async def test_membership_expects_the_uuid_only_when_the_vm_sends_it() -> None:
    """A ready event with identity=True expects its UUID; identity=False or no UUID checks nothing."""
    router = _router()
    apply_event(router, _ready("vm-a", UUID, True), 0.0)
    apply_event(router, _ready("vm-b", UUID, False), 0.0)
    apply_event(router, _ready("vm-c", None, True), 0.0)
    assert [router.table.backends[vm].identity for vm in ("vm-a", "vm-b", "vm-c")] == [UUID, None, None]
    assert [b.vm for b in router.table.candidates(0.0)] == ["vm-b", "vm-c"]


async def test_fleet_listing_carries_the_uuid_too() -> None:
    """A VM learned from a provisioner's listing expects its UUID as one from an event does."""
    router = _router()
    record = VmRecord(
        vm="vm-a", state=VmState.READY, address="127.0.0.1:9000", since=datetime.now(UTC), uuid=UUID, identity=True
    )
    assert apply_listing(router, [VmList(host="h1", vms=[record])], 0.0) == 1
    backend = router.table.get("vm-a")
    assert backend is not None and backend.identity == UUID and backend.verification.pending


async def test_identity_check_off_checks_nothing() -> None:
    """With `balancer_identity_check` off, a VM announced with identity is a candidate at once."""
    router = _router(identity_check=False)
    apply_event(router, _ready("vm-a", UUID, True), 0.0)
    backend = router.table.get("vm-a")
    assert backend is not None and backend.identity is None
    assert router.table.candidates(0.0) == [backend]


def test_a_draining_vm_bridges_only_while_its_replacement_is_being_verified() -> None:
    """With no other candidate, a trusted draining VM takes requests while a new VM is being verified, not after."""
    table = BackendTable(HealthPolicy())
    table.ready("vm-old", "127.0.0.1:9001", 0.0)
    table.drain("vm-old")
    assert table.candidates(1.0) == [], "a drain with no replacement on its way refuses at once"
    new = table.ready("vm-new", "127.0.0.1:9002", 1.0, identity=UUID)
    assert [b.vm for b in table.candidates(1.0)] == ["vm-old"]
    new.verification.confirmed()
    assert [b.vm for b in table.candidates(2.0)] == ["vm-new"]
