"""plan_clone on the template fixture: what a clone must change, and what it must keep."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.provisioner.core.clone import (
    ClonePlan,
    ClonePlanError,
    SourceVolume,
    interface_count,
    plan_clone,
    template_disk_paths,
)
from services.provisioner.core.tags import NAMESPACE, VmTag, parse_tag, template_addresses
from services.provisioner.identities import random_macs, random_uuid

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "libvirt" / "template-domain.xml"
TEMPLATE = FIXTURE.read_text()
DISK = "/fleet-pool/backend-template.qcow2"
SOURCES = {DISK: SourceVolume(DISK, "fleet-pool", "/fleet-pool", 64 * 2**20, "qcow2")}
TAG = VmTag("fleet-a", "req-1", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "host-1", "10.0.0.5:443")
UUID = "6f1c0d2e-1111-4222-8333-444455556666"
MACS = ("52:54:00:00:00:01", "52:54:00:00:00:02")


def _plan(mode: str = "linked") -> tuple[ClonePlan, ET.Element]:
    plan = plan_clone(TEMPLATE, "qf-1234abcd", MACS, TAG, SOURCES, mode, uuid=UUID)  # type: ignore[arg-type]
    return plan, ET.fromstring(plan.domain_xml)


def test_clone_gets_new_name_and_its_own_uuid() -> None:
    """The clone carries the new name, the given <uuid> (not the template's), no SMBIOS uuid entry and no title."""
    plan, domain = _plan()
    assert domain.findtext("name") == "qf-1234abcd"
    assert [u.text for u in domain.findall("uuid")] == [plan.uuid] == [UUID]
    assert random_uuid() != random_uuid()
    assert domain.find("title") is None
    entries = [e.get("name") for e in domain.findall("sysinfo/system/entry")]
    assert entries == ["manufacturer"]


def test_a_given_uuid_is_used_as_is() -> None:
    """A UUID chosen by the caller is the clone's domain UUID (the one its guest will report)."""
    chosen = "0f8e3c1a-2b4d-4e6f-8a9b-0c1d2e3f4a5b"
    plan = plan_clone(TEMPLATE, "qf-1", MACS, TAG, SOURCES, uuid=chosen)
    assert plan.uuid == chosen
    assert ET.fromstring(plan.domain_xml).findtext("uuid") == chosen


def test_every_mac_is_replaced_and_tap_names_dropped() -> None:
    """Each NIC gets the planned MAC (none of the template's survives) and loses its target dev."""
    plan, domain = _plan()
    macs = tuple(m.get("address") for m in domain.findall("devices/interface/mac"))
    assert macs == MACS == plan.macs
    assert "52:54:00:aa:bb:01" not in plan.domain_xml
    assert domain.findall("devices/interface/target") == []


def test_writable_disk_points_at_the_overlay_and_cdrom_is_shared() -> None:
    """The writable disk moves to a qcow2 overlay in the template's pool; the read-only cdrom stays."""
    plan, domain = _plan()
    disk, cdrom = domain.findall("devices/disk")
    assert disk.find("source").get("file") == "/fleet-pool/qf-1234abcd-vda.fleet-a.host-1.qcow2"  # type: ignore[union-attr]
    assert disk.find("driver").get("type") == "qcow2"  # type: ignore[union-attr]
    assert cdrom.find("source").get("file") == "/fleet-pool/seed.iso"  # type: ignore[union-attr]
    (volume,) = plan.volumes
    volume_xml = ET.fromstring(volume.xml)
    assert volume_xml.findtext("backingStore/path") == DISK
    assert volume_xml.findtext("capacity") == str(64 * 2**20)
    overlay = "/fleet-pool/qf-1234abcd-vda.fleet-a.host-1.qcow2"
    assert (volume.pool, volume.path, volume.mode) == ("fleet-pool", overlay, "linked")


def test_full_copy_plan_has_no_backing_store() -> None:
    """In full mode the volume is a copy of the source (createXMLFrom), without a backing store."""
    plan, _domain = _plan("full")
    (volume,) = plan.volumes
    assert ET.fromstring(volume.xml).find("backingStore") is None
    assert volume.mode == "full" and volume.source == DISK


def test_graphics_console_and_channel_paths_are_reset() -> None:
    """VNC port, pty paths and the agent socket path are removed so libvirt picks fresh ones."""
    domain = _plan()[1]
    graphics = domain.find("devices/graphics")
    assert graphics is not None and "port" not in graphics.attrib and graphics.get("autoport") == "yes"
    for kind in ("serial", "console", "channel"):
        device = domain.find(f"devices/{kind}")
        assert device is not None and "tty" not in device.attrib
        assert device.find("source") is None or "path" not in device.find("source").attrib  # type: ignore[union-attr]


def test_metadata_tag_names_fleet_request_time_and_volumes() -> None:
    """Our namespaced tag in <metadata> holds fleet, request id, created-at, host, address and volumes."""
    plan, domain = _plan()
    assert domain.find(f"metadata/{{{NAMESPACE}}}vm") is not None
    tag = parse_tag(plan.domain_xml)
    overlay = ("/fleet-pool/qf-1234abcd-vda.fleet-a.host-1.qcow2",)
    assert tag == VmTag("fleet-a", "req-1", TAG.created_at, "host-1", "10.0.0.5:443", overlay)


def test_disk_outside_a_pool_is_a_clear_error() -> None:
    """A template disk that is no pool volume is refused with a message naming the disk."""
    with pytest.raises(ClonePlanError, match=r"backend-template\.qcow2 is not a volume"):
        plan_clone(TEMPLATE, "qf-x", MACS, TAG, {}, uuid=UUID)


def test_mac_count_must_match_interfaces() -> None:
    """Giving fewer MACs than the template has NICs is refused."""
    with pytest.raises(ClonePlanError, match="2 interface"):
        plan_clone(TEMPLATE, "qf-x", MACS[:1], TAG, SOURCES, uuid=UUID)


def test_bad_xml_is_a_clear_error() -> None:
    """Unparsable template XML raises ClonePlanError, not an XML library exception."""
    with pytest.raises(ClonePlanError, match="does not parse"):
        plan_clone("<domain", "qf-x", (), TAG, {}, uuid=UUID)


def test_helpers_read_the_template() -> None:
    """The disk and NIC helpers see one writable disk and two interfaces."""
    assert template_disk_paths(TEMPLATE) == [DISK]
    assert interface_count(TEMPLATE) == 2


def test_random_macs_are_distinct_and_in_qemu_range() -> None:
    """Generated MACs are unique and use QEMU's 52:54:00 prefix."""
    macs = random_macs(50, random.Random(7))
    assert len(set(macs)) == 50
    assert all(m.startswith("52:54:00:") and len(m) == 17 for m in macs)


def test_template_metadata_in_our_namespace_is_replaced_by_the_tag() -> None:
    """The template's own <qf:template> entry is read for static addresses and not copied into clones."""
    template = TEMPLATE.replace(
        "<memory unit='MiB'>256</memory>",
        f"<metadata><qf:template xmlns:qf='{NAMESPACE}'><qf:addresses>10.9.0.1, 10.9.0.2</qf:addresses>"
        "</qf:template><other xmlns='urn:someone:else'/></metadata><memory unit='MiB'>256</memory>",
    )
    assert template_addresses(template) == "10.9.0.1, 10.9.0.2"
    metadata = ET.fromstring(plan_clone(template, "qf-x", MACS, TAG, SOURCES, uuid=UUID).domain_xml).find("metadata")
    assert metadata is not None
    assert [child.tag for child in metadata] == ["{urn:someone:else}other", f"{{{NAMESPACE}}}vm"]
    assert template_addresses(TEMPLATE) == ""
