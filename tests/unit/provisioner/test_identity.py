"""Identity at clone time: each clone's UUID is chosen up front, readiness checks it when the
template (or the setting) says the guest proves it, and the events carry both."""

from __future__ import annotations

import pytest

from services.provisioner.boot import checks_identity
from services.provisioner.core.machine import to_event
from services.provisioner.core.tags import template_identity
from services.provisioner.fleet import Fleet
from shared.contract.events import VmState
from shared.contract.provisioning import CreateVm
from tests.support import wait_until
from tests.unit.provisioner.fakes import IDENTITY_TEMPLATE_XML, TEMPLATE_XML, FakeHypervisor
from tests.unit.provisioner.harness import Harness


@pytest.mark.parametrize(
    ("setting", "declared", "expected"),
    [("auto", True, True), ("auto", False, False), ("on", False, True), ("off", True, False)],
)
def test_identity_is_checked_per_setting_and_template(setting: str, declared: bool, expected: bool) -> None:
    """`auto` follows the template's declaration, `on` and `off` override it."""
    xml = IDENTITY_TEMPLATE_XML if declared else TEMPLATE_XML
    assert template_identity(xml) is declared
    assert checks_identity(setting, xml) is expected


async def _ready(h: Harness) -> str:
    record = await h.fleet.create(CreateVm(request_id="r1", epoch=1))
    await wait_until(lambda: VmState.READY in h.states(record.vm), timeout=5, what="ready")
    return record.vm


async def test_a_declaring_template_makes_readiness_check_the_clones_own_uuid() -> None:
    """Readiness is asked for the UUID the clone was defined with, and the ready event says to check it."""
    hv = FakeHypervisor()
    hv.template_xml = IDENTITY_TEMPLATE_XML
    h = Harness(hv)
    vm = await _ready(h)
    defined_uuid = hv.domain(vm).uuid  # type: ignore[union-attr]
    assert defined_uuid is not None
    assert {uuid for _address, uuid in h.probed} == {defined_uuid}
    event = to_event(h.fleet.entries[vm], "h1")
    assert (event.uuid, event.identity) == (defined_uuid, True)


async def test_an_undeclaring_template_is_probed_without_identity_but_still_reports_its_uuid() -> None:
    """Without a declaration readiness takes any answer; the event still names the UUID, marked unchecked."""
    hv = FakeHypervisor()
    h = Harness(hv)
    vm = await _ready(h)
    assert {uuid for _address, uuid in h.probed} == {None}
    event = to_event(h.fleet.entries[vm], "h1")
    assert event.uuid == hv.domain(vm).uuid  # type: ignore[union-attr]
    assert event.identity is False


async def test_a_vm_that_answers_as_another_fails_with_the_identity_reason() -> None:
    """A probe that keeps seeing another UUID fails the VM with that reason and tears it down."""
    hv = FakeHypervisor()
    hv.template_xml = IDENTITY_TEMPLATE_XML
    h = Harness(hv)

    async def impostor(address: str, uuid: str | None = None) -> str | None:
        return f"GET https://{address}/ answered as another VM (expected {uuid})"

    h.fleet.probe = impostor
    record = await h.fleet.create(CreateVm(request_id="r1", epoch=1))
    await wait_until(lambda: VmState.DESTROYED in h.states(record.vm), timeout=5, what="destroyed")
    failed = next(e for e in h.published if e.state is VmState.FAILED)
    assert "answered as another VM" in (failed.reason or "")
    assert hv.defined == {}


async def test_identity_survives_a_provisioner_restart_through_the_tag() -> None:
    """A new provisioner adopting the VM reads the identity choice from its tag and the UUID from libvirt."""
    hv = FakeHypervisor()
    hv.template_xml = IDENTITY_TEMPLATE_XML
    first = Harness(hv)
    vm = await _ready(first)
    hv.template_xml = TEMPLATE_XML  # the template changed since: the VM's own tag still decides
    second = Harness(hv)
    assert isinstance(second.fleet, Fleet)
    await second.fleet.reconcile()
    await wait_until(lambda: VmState.READY in second.states(vm), timeout=5, what="adopted and ready")
    entry = second.fleet.entries[vm]
    assert (entry.uuid, entry.identity) == (hv.domain(vm).uuid, True)  # type: ignore[union-attr]
    assert (hv.domain(vm).uuid) in {uuid for _a, uuid in second.probed}  # type: ignore[union-attr]
