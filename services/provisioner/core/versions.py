"""Template versions as libvirt keeps them: a base volume named from its digest and a version domain.

libvirt is the source of truth for what exists, so a version is recorded there and nowhere else: its
base image is a volume `qfbase-<digest 16>.<host>.qcow2` in the template's pool, and the version itself
is a defined, never started domain `<template>.<version>.<host>`: a copy of the template's XML whose
one writable disk is that base, with `<qf:template>` metadata (the version, digest, creation time,
identity, protection). Clones of a version are planned from that domain like any template
(`clone.plan_clone`). The domain is defined only after the base is complete and its digest checked,
so "the version domain exists" is what `ready` means; a base without one is a push cut short.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime

from services.provisioner.core.clone import template_disk_paths
from services.provisioner.core.tags import NAMESPACE

NS = f"{{{NAMESPACE}}}"
BASE_PREFIX = "qfbase-"


class VersionPlanError(ValueError):
    """The source cannot become a version as it is; the message says what to fix."""


@dataclass(frozen=True)
class VersionMeta:
    """What a version domain's metadata says."""

    template: str
    version: str
    digest: str
    created_at: datetime
    host: str
    size_bytes: int | None = None
    protected: str | None = None
    """Why it may not be retired (None: it may, once no chain holds it)."""


def version_id(label: str | None, digest: str) -> str:
    """The version's name: the push's label, or the digest's first 12 digits (the same bytes, the same name)."""
    return label or digest[:12]


def base_volume_name(digest: str, host: str) -> str:
    """The base volume's name: from its digest (the same bytes are one volume), and the host (a pool may be
    shared by hosts' provisioners, each keeping its own copy and record)."""
    return f"{BASE_PREFIX}{digest[:16]}.{host}.qcow2"


def has_backing_file(header: bytes) -> bool:
    """Whether a qcow2 header names a backing file (bytes 8-15: its offset): such an image is not a whole base."""
    return header[:4] == b"QFI\xfb" and len(header) >= 16 and int.from_bytes(header[8:16], "big") != 0


def version_domain_name(template: str, version: str, host: str) -> str:
    return f"{template}.{version}.{host}"


def base_volume_xml(name: str, capacity: int, fmt: str = "qcow2") -> str:
    """The XML of the empty volume the image is uploaded into (its size is the source's)."""
    volume = ET.Element("volume")
    ET.SubElement(volume, "name").text = name
    ET.SubElement(volume, "capacity", unit="bytes").text = str(capacity)
    ET.SubElement(volume, "allocation", unit="bytes").text = "0"
    target = ET.SubElement(volume, "target")
    ET.SubElement(target, "format", type=fmt)
    return ET.tostring(volume, encoding="unicode")


def version_domain_xml(template_xml: str, name: str, base_path: str, meta: VersionMeta) -> str:
    """The version domain: the template's XML renamed, its one writable disk on `base_path`, our metadata.

    The UUID (and the SMBIOS one) are dropped so libvirt gives it its own: otherwise the define would
    replace the template itself.
    """
    domain = ET.fromstring(template_xml)
    disks = template_disk_paths(template_xml)
    if len(disks) != 1:
        raise VersionPlanError(f"a template version needs exactly one writable disk; this one has {len(disks)}")
    domain.attrib.pop("id", None)
    domain.find("name").text = name  # type: ignore[union-attr]
    for old in domain.findall("uuid"):
        domain.remove(old)
    for system in domain.findall("sysinfo/system"):
        for entry in [e for e in system.findall("entry") if e.get("name") == "uuid"]:
            system.remove(entry)
    for source in domain.iterfind("devices/disk/source"):
        if source.get("file") == disks[0]:
            source.set("file", base_path)
    _set_metadata(domain, meta)
    return ET.tostring(domain, encoding="unicode")


def _set_metadata(domain: ET.Element, meta: VersionMeta) -> None:
    metadata = domain.find("metadata")
    if metadata is None:
        metadata = ET.SubElement(domain, "metadata")
    old = metadata.find(f"{NS}template")
    element = old if old is not None else ET.SubElement(metadata, f"{NS}template")
    for child in [c for c in element if c.tag[len(NS):] in _FIELDS]:
        element.remove(child)
    for key, text in _fields(meta).items():
        if text is not None:
            ET.SubElement(element, f"{NS}{key}").text = text


_FIELDS = ("of", "version", "digest", "created", "host", "size", "protected")


def _fields(meta: VersionMeta) -> dict[str, str | None]:
    return {
        "of": meta.template, "version": meta.version, "digest": meta.digest,
        "created": meta.created_at.astimezone(UTC).isoformat(), "host": meta.host,
        "size": None if meta.size_bytes is None else str(meta.size_bytes), "protected": meta.protected,
    }


def with_protection(domain_xml: str, protected: str | None) -> str:
    """The version domain's XML with its protection set (a reason) or cleared (None)."""
    domain = ET.fromstring(domain_xml)
    meta = parse_version(domain_xml)
    if meta is None:
        raise VersionPlanError("not a version domain")
    _set_metadata(domain, VersionMeta(**{**meta.__dict__, "protected": protected}))
    return ET.tostring(domain, encoding="unicode")


def parse_version(domain_xml: str) -> VersionMeta | None:
    """The version a domain XML records, or None (a plain template, a VM, or bad metadata)."""
    try:
        domain = ET.fromstring(domain_xml)
    except ET.ParseError:
        return None
    element = domain.find(f"metadata/{NS}template")
    if element is None:
        return None
    values = {c.tag[len(NS):]: (c.text or "").strip() for c in element if c.tag.startswith(NS)}
    created = _time(values.get("created"))
    if not values.get("version") or not values.get("digest") or not values.get("of") or created is None:
        return None
    size = values.get("size", "")
    return VersionMeta(
        template=values["of"], version=values["version"], digest=values["digest"], created_at=created,
        host=values.get("host", ""), size_bytes=int(size) if size.isdigit() else None,
        protected=values.get("protected") or None,
    )


def _time(text: str | None) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text or "")
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
