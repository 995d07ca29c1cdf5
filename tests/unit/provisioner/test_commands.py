"""The rules a command meets (epoch, room, static address, drain) and how a refusal reads on the wire."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from services.provisioner.core.commands import check_room, draining, obeyed_epoch, static_address
from services.provisioner.core.errors import (
    CannotClone,
    CannotDrain,
    NoRoom,
    NotOurs,
    Refused,
    RemovalIncomplete,
    StaleEpoch,
    UnknownVm,
)
from services.provisioner.core.machine import VmEntry, adopted
from services.provisioner.core.ports import HypervisorError
from services.provisioner.core.tags import VmTag
from services.provisioner.service import bus_error
from shared.contract.base import ErrorCode
from shared.contract.events import VmState

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TAG = VmTag("f1", "r1", T0, "h1", "127.0.0.1:1")
S = VmState


def _vm(name: str, state: VmState, address: str | None = None) -> VmEntry:
    return replace(adopted(name, state, T0, TAG), address=address)


def test_a_newer_or_equal_epoch_is_obeyed_and_an_older_one_refused() -> None:
    """The epoch to remember only grows; a command from an older leader raises StaleEpoch naming both."""
    assert obeyed_epoch(3, 3) == 3 and obeyed_epoch(3, 5) == 5
    with pytest.raises(StaleEpoch, match="epoch 2 is older than 3"):
        obeyed_epoch(3, 2)


def test_the_ceiling_counts_every_vm_that_may_hold_libvirt_objects() -> None:
    """Failed VMs still count against max_vms (their teardown is pending); destroyed ones do not."""
    check_room([_vm("a", S.READY), _vm("b", S.DESTROYED)], 2, "h1")
    with pytest.raises(NoRoom, match="max_vms=2"):
        check_room([_vm("a", S.READY), _vm("b", S.FAILED)], 2, "h1")


def test_a_static_address_comes_from_the_setting_or_the_template_and_runs_out() -> None:
    """The first address no live VM holds; the template's list when none is configured; NoRoom when used up."""
    held = [_vm("a", S.READY, "127.0.0.1:1")]
    assert static_address(("127.0.0.1:1", "127.0.0.1:2"), "<domain/>", "t", 443, held) == "127.0.0.1:2"
    xml = ('<domain><metadata><qf:template xmlns:qf="urn:quicfleet:vm:1"><qf:addresses>10.0.0.7</qf:addresses>'
           "</qf:template></metadata></domain>")
    assert static_address((), xml, "t", 8443, held) == "10.0.0.7:8443"
    with pytest.raises(NoRoom, match="all 1 static addresses"):
        static_address(("127.0.0.1:1",), "<domain/>", "t", 443, held)
    with pytest.raises(CannotClone, match="template t has bad static addresses"):
        static_address((), xml.replace("10.0.0.7", "nope"), "t", 443, [])


def test_only_a_ready_vm_drains_and_one_draining_already_is_no_change() -> None:
    """Ready becomes draining with the deadline and reason; draining again is None; others are refused."""
    marked = draining(_vm("qf-1", S.READY), "qf-1", T0, 12.0, "asked")
    assert marked is not None and (marked.state, marked.deadline_s, marked.reason) == (S.DRAINING, 12.0, "asked")
    assert draining(marked, "qf-1", T0, 30.0, "again") is None
    with pytest.raises(CannotDrain, match="qf-1 is booting"):
        draining(_vm("qf-1", S.BOOTING), "qf-1", T0, 12.0, "asked")
    for gone in (None, _vm("qf-1", S.DESTROYED), _vm("qf-1", S.FAILED)):
        with pytest.raises(UnknownVm, match="qf-1 is not a live VM"):
            draining(gone, "qf-1", T0, 12.0, "asked")


def test_refusals_and_libvirt_failures_map_to_the_contract_codes() -> None:
    """The edge answers each refusal with its code, keeping the words; libvirt failing is `unavailable`."""
    cases: dict[Refused | HypervisorError, ErrorCode] = {
             StaleEpoch("x"): ErrorCode.CONFLICT, CannotDrain("x"): ErrorCode.CONFLICT,
             NoRoom("x"): ErrorCode.UNAVAILABLE, CannotClone("x"): ErrorCode.UNAVAILABLE,
             RemovalIncomplete("x"): ErrorCode.UNAVAILABLE, NotOurs("x"): ErrorCode.NOT_FOUND,
             UnknownVm("x"): ErrorCode.NOT_FOUND,
             HypervisorError("x"): ErrorCode.UNAVAILABLE}
    assert {type(e): bus_error(e).code for e in cases} == {type(e): code for e, code in cases.items()}
    assert bus_error(NoRoom("host h1 is full")).message == "host h1 is full"
