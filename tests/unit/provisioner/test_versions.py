"""Template versions as libvirt records them: names, the version domain's XML and metadata, the clone's tag."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.provisioner.core.machine import requested
from services.provisioner.core.tags import VmTag, parse_tag, tag_xml
from services.provisioner.core.versions import (
    VersionMeta,
    VersionPlanError,
    base_volume_name,
    has_backing_file,
    parse_version,
    version_domain_name,
    version_domain_xml,
    version_id,
    with_protection,
)
from services.provisioner.core.warmpool import pick
from shared.contract.events import VmState

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "libvirt" / "template-domain.xml"
DIGEST = "ab" * 32
META = VersionMeta("backend-template", "v2", DIGEST, datetime(2026, 12, 7, tzinfo=UTC), "h1", 4096)


def test_a_version_without_label_is_named_from_its_digest() -> None:
    """No label: the first 12 digits of the digest, so the same bytes get the same name on every host."""
    assert version_id(None, DIGEST) == DIGEST[:12]
    assert version_id("v2", DIGEST) == "v2"
    assert base_volume_name(DIGEST, "h1") == f"qfbase-{DIGEST[:16]}.h1.qcow2"
    assert version_domain_name("backend-template", "v2", "h1") == "backend-template.v2.h1"


def test_the_version_domain_stands_on_the_base_and_records_the_version() -> None:
    """The version domain's disk is the base, its UUIDs are gone, and its metadata reads back as written."""
    xml = version_domain_xml(FIXTURE.read_text(), "backend-template.v2.h1", "/pool/base.qcow2", META)
    assert "/pool/base.qcow2" in xml and "<uuid>" not in xml
    assert "backend-template.v2.h1" in xml
    assert parse_version(xml) == META


def test_protection_is_set_and_cleared_in_the_metadata() -> None:
    """Protecting and unprotecting a version rewrites only that field."""
    xml = version_domain_xml(FIXTURE.read_text(), "t.v2.h1", "/pool/base.qcow2", META)
    kept = with_protection(xml, "rollout may roll back")
    assert parse_version(kept) == VersionMeta(**{**META.__dict__, "protected": "rollout may roll back"})
    assert parse_version(with_protection(kept, None)) == META


def test_a_plain_template_or_vm_is_no_version() -> None:
    """A domain without version metadata (the template itself) parses as None."""
    assert parse_version(FIXTURE.read_text()) is None
    assert parse_version("not xml") is None


def test_a_template_with_two_writable_disks_cannot_be_versioned() -> None:
    """Only one base image per version: a second writable disk is refused with a reason."""
    two = FIXTURE.read_text().replace("</devices>", "<disk type='file' device='disk'><source file='/p/b.qcow2'/>"
                                      "<target dev='vdb'/></disk></devices>")
    with pytest.raises(VersionPlanError, match="exactly one writable disk"):
        version_domain_xml(two, "t.v2.h1", "/pool/base.qcow2", META)


def test_the_clone_tag_records_its_version() -> None:
    """A clone's tag carries its version through libvirt's metadata and back; an old tag has none."""
    tag = VmTag("f", "r-1", datetime(2026, 12, 7, tzinfo=UTC), "h1", version="v2")
    assert parse_tag(tag_xml(tag)) == tag
    assert parse_tag(tag_xml(VmTag("f", "r-1", datetime(2026, 12, 7, tzinfo=UTC)))).version is None  # type: ignore[union-attr]


def test_a_qcow2_header_with_a_backing_file_is_seen() -> None:
    """An overlay's header (backing offset set) is no whole base; a plain qcow2 or raw header is."""
    plain = b"QFI\xfb" + b"\x00\x00\x00\x03" + bytes(8)
    overlay = b"QFI\xfb" + b"\x00\x00\x00\x03" + (512).to_bytes(8, "big")
    assert has_backing_file(overlay)
    assert not has_backing_file(plain) and not has_backing_file(b"\x00" * 64)


def test_a_create_takes_a_pooled_vm_only_of_its_version() -> None:
    """A create for v2 never gets a v1 VM out of the warm pool, and a plain create never a versioned one."""
    now = datetime(2026, 12, 7, tzinfo=UTC)
    old = replace(requested("qf-0000000a", "r-1", now, pooled=True, version="v1"), state=VmState.POOLED)
    new = replace(requested("qf-0000000b", "r-2", now, pooled=True, version="v2"), state=VmState.POOLED)
    entries = {e.name: e for e in (old, new)}
    assert pick(entries, (), "v2") == "qf-0000000b"
    assert pick(entries, (), "v1") == "qf-0000000a"
    assert pick(entries, (), None) is None
