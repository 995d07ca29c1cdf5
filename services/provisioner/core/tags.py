"""The tag each VM carries in its libvirt `<metadata>`: how a provisioner knows its own VMs.

libvirt is the source of truth: after a crash or restart the provisioner rebuilds its view from
these tags alone (fleet, request id, creation time, static address, volumes it made), and it
never touches a domain whose tag names another fleet or that has no tag at all.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime

NAMESPACE = "urn:quicfleet:vm:1"
PREFIX = "qf"
ROOT = "vm"
ET.register_namespace(PREFIX, NAMESPACE)  # clones' XML then reads `qf:vm`, not `ns0:vm`


@dataclass(frozen=True)
class VmTag:
    """What a VM's metadata says about it."""

    fleet: str
    request_id: str | None
    created_at: datetime
    host: str | None = None
    address: str | None = None
    volumes: tuple[str, ...] = field(default=())
    epoch: int = 0
    """The leader epoch that asked for the VM: after a restart, the highest one seen is rebuilt."""
    identity: bool = False
    """The VM proves its domain UUID in an `x-quicfleet-vm` header (decided at clone time)."""
    pooled: bool = False
    """Made for the warm pool and not taken yet (`<qf:pool>1</qf:pool>`): a restarted provisioner adopts it
    paused as `pooled`; a take rewrites the tag without it before it resumes the VM (`warmpool.py`)."""
    version: str | None = None
    """The template version it was cloned from (`<qf:version>`; None: the template domain itself)."""


def tag_element(tag: VmTag) -> ET.Element:
    """The `<qf:vm>` element (namespaced, so it cannot clash with other tools' metadata)."""
    return _element(tag, f"{{{NAMESPACE}}}")


def tag_xml(tag: VmTag) -> str:
    """The tag as the XML string `virDomainSetMetadata` takes: without the namespace, which libvirt adds itself
    from the call's prefix and URI (it refuses an element that declares one)."""
    return ET.tostring(_element(tag, ""), encoding="unicode")


def _element(tag: VmTag, namespace: str) -> ET.Element:
    root = ET.Element(f"{namespace}{ROOT}")

    def child(name: str, text: str | None) -> None:
        if text is not None:
            ET.SubElement(root, f"{namespace}{name}").text = text

    child("fleet", tag.fleet)
    child("request", tag.request_id)
    child("created", tag.created_at.astimezone(UTC).isoformat())
    child("host", tag.host)
    child("address", tag.address)
    for path in tag.volumes:
        child("volume", path)
    child("epoch", str(tag.epoch))
    child("identity", "uuid" if tag.identity else None)
    child("pool", "1" if tag.pooled else None)
    child("version", tag.version)
    return root


def parse_tag(text: str) -> VmTag | None:
    """Read a tag from `virDomainGetMetadata` output or a whole domain XML; None if absent or bad.

    libvirt returns the element with or without its namespace depending on how it was set,
    so elements are matched by local name.
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return None
    element = root if _local(root.tag) == ROOT else _find_in_metadata(root)
    return None if element is None else _read(element)


def template_addresses(template_xml: str) -> str:
    """The template's own static address list: `<qf:template><qf:addresses>a, b</qf:addresses>` in metadata.

    Lets a template ship the addresses its clones may use (static strategy) when the
    provisioner's `static_addresses` setting is empty. Empty string when absent.
    """
    try:
        root = ET.fromstring(template_xml)
    except ET.ParseError:
        return ""
    found = root.findtext(f"metadata/{{{NAMESPACE}}}template/{{{NAMESPACE}}}addresses")
    return (found or "").strip()


def template_identity(template_xml: str) -> bool:
    """Whether the template declares that its guests send their UUID: `<qf:template><qf:identity>uuid`.

    A template cannot be asked whether its web server sends the header, so it says so itself;
    only then does the provisioner's `ready_identity=auto` check it (see docs/services/provisioner.md).
    """
    try:
        root = ET.fromstring(template_xml)
    except ET.ParseError:
        return False
    found = root.findtext(f"metadata/{{{NAMESPACE}}}template/{{{NAMESPACE}}}identity")
    return (found or "").strip() == "uuid"


def _find_in_metadata(domain: ET.Element) -> ET.Element | None:
    metadata = domain.find("metadata")
    if metadata is None:
        return None
    return metadata.find(f"{{{NAMESPACE}}}{ROOT}")


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1]


def _read(element: ET.Element) -> VmTag | None:
    values: dict[str, list[str]] = {}
    for child in element:
        values.setdefault(_local(child.tag), []).append((child.text or "").strip())
    fleet = _one(values, "fleet")
    created = _parse_time(_one(values, "created"))
    if not fleet or created is None:
        return None
    return VmTag(
        fleet=fleet, request_id=_one(values, "request"), created_at=created, host=_one(values, "host"),
        address=_one(values, "address"), volumes=tuple(values.get("volume", [])), epoch=_epoch(_one(values, "epoch")),
        identity=_one(values, "identity") == "uuid", pooled=_one(values, "pool") == "1",
        version=_one(values, "version"),
    )


def _epoch(text: str | None) -> int:
    return int(text) if text is not None and text.isdigit() and len(text) <= 16 else 0


def _one(values: dict[str, list[str]], key: str) -> str | None:
    found = values.get(key)
    return found[0] if found and found[0] else None


def _parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
