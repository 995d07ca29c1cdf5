"""Plan a clone in memory: the new domain XML and the volumes to make, before touching libvirt.

Like virt-manager's cloner, planning is separate from execution so that every decision (name,
MACs, disk paths, reset device paths, our tag) is a pure function of the template, testable on
XML fixtures, and an execution failure never leaves a half-decided clone.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from services.provisioner.core.tags import NAMESPACE, VmTag, tag_element

CloneMode = Literal["linked", "full"]
_PATHED = ("serial", "console", "parallel", "channel")


class ClonePlanError(ValueError):
    """The template cannot be cloned as it is; the message says what to fix."""


@dataclass(frozen=True)
class SourceVolume:
    """A template disk's volume as libvirt knows it (found by the adapter, used by the plan)."""

    path: str
    pool: str
    pool_dir: str
    capacity: int
    format: str = "qcow2"


@dataclass(frozen=True)
class VolumePlan:
    """One volume to create: an overlay backed by `source` (linked) or a copy of it (full)."""

    name: str
    pool: str
    path: str
    source: str
    xml: str
    mode: CloneMode


@dataclass(frozen=True)
class ClonePlan:
    """Everything execution needs: define `domain_xml`, create `volumes`, start `name`."""

    name: str
    domain_xml: str
    volumes: tuple[VolumePlan, ...]
    macs: tuple[str, ...]
    tag: VmTag
    uuid: str


def template_disk_paths(template_xml: str) -> list[str]:
    """Source files of the template's writable disks (the ones a clone needs its own copy of)."""
    return [path for _disk, path in _clonable_disks(_parse(template_xml))]


def interface_count(template_xml: str) -> int:
    return len(_parse(template_xml).findall("devices/interface"))


def plan_clone(
    template_xml: str,
    name: str,
    macs: Sequence[str],
    tag: VmTag,
    sources: Mapping[str, SourceVolume],
    mode: CloneMode = "linked",
    *,
    uuid: str,
) -> ClonePlan:
    """The clone of `template_xml` called `name`; raises ClonePlanError when it cannot be made.

    `uuid` (chosen by the caller: randomness is glue) becomes the domain's UUID, which libvirt gives the guest
    as its SMBIOS system UUID: the value a VM proves its identity with.
    """
    domain = _parse(template_xml)
    domain.attrib.pop("id", None)
    _set_name(domain, name)
    _set_uuid(domain, uuid)
    _set_macs(domain, macs)
    volumes = tuple(_retarget_disks(domain, name, tag, sources, mode))
    _reset_device_paths(domain)
    full_tag = replace(tag, volumes=tuple(v.path for v in volumes))
    _set_tag(domain, full_tag)
    return ClonePlan(name, ET.tostring(domain, encoding="unicode"), volumes, tuple(macs), full_tag, uuid)


def _parse(template_xml: str) -> ET.Element:
    try:
        domain = ET.fromstring(template_xml)
    except ET.ParseError as error:
        raise ClonePlanError(f"template XML does not parse: {error}") from None
    if domain.tag != "domain":
        raise ClonePlanError(f"template XML root is <{domain.tag}>, not <domain>")
    return domain


def _set_name(domain: ET.Element, name: str) -> None:
    element = domain.find("name")
    if element is None:
        element = ET.SubElement(domain, "name")
    element.text = name
    for title in domain.findall("title"):
        domain.remove(title)


def _set_uuid(domain: ET.Element, uuid: str) -> None:
    """The clone's own UUID; an SMBIOS override from the template is dropped so the guest sees it."""
    for old in domain.findall("uuid"):
        domain.remove(old)
    element = ET.Element("uuid")
    element.text = uuid
    name = domain.find("name")
    domain.insert(0 if name is None else list(domain).index(name) + 1, element)
    for system in domain.findall("sysinfo/system"):
        for entry in system.findall("entry"):
            if entry.get("name") == "uuid":
                system.remove(entry)


def _set_macs(domain: ET.Element, macs: Sequence[str]) -> None:
    interfaces = domain.findall("devices/interface")
    if len(macs) != len(interfaces):
        raise ClonePlanError(f"template has {len(interfaces)} interface(s) but {len(macs)} MAC(s) were given")
    for interface, mac in zip(interfaces, macs, strict=True):
        for old in interface.findall("mac") + interface.findall("target"):
            interface.remove(old)
        ET.SubElement(interface, "mac", address=mac)


def _clonable_disks(domain: ET.Element) -> list[tuple[ET.Element, str]]:
    disks = []
    for disk in domain.findall("devices/disk"):
        if disk.get("device", "disk") != "disk" or disk.find("readonly") is not None:
            continue
        if disk.find("shareable") is not None:
            continue
        source = disk.find("source")
        if disk.get("type", "file") != "file" or source is None or not source.get("file"):
            raise ClonePlanError(f"template disk {_target(disk)} is not a file disk; only file disks can be cloned")
        disks.append((disk, source.get("file", "")))
    return disks


def _target(disk: ET.Element) -> str:
    target = disk.find("target")
    return target.get("dev", "?") if target is not None else "?"


def _retarget_disks(
    domain: ET.Element, name: str, tag: VmTag, sources: Mapping[str, SourceVolume], mode: CloneMode
) -> list[VolumePlan]:
    plans = []
    for disk, path in _clonable_disks(domain):
        source = sources.get(path)
        if source is None:
            raise ClonePlanError(f"template disk {path} is not a volume in a libvirt storage pool")
        plan = _volume_plan(source, volume_name(name, _target(disk), tag), mode)
        disk.find("source").set("file", plan.path)  # type: ignore[union-attr]
        _set_driver_format(disk, "qcow2" if mode == "linked" else source.format)
        plans.append(plan)
    return plans


def volume_name(vm: str, dev: str, tag: VmTag) -> str:
    """`<vm>-<dev>.<fleet>.<host>.qcow2`: the disk says whose it is even after its domain is gone.

    libvirt keeps no metadata on volumes, so the name is the only owner mark a disk can carry;
    reconcile deletes a domain-less disk only when this name is exactly ours. Without a host the
    old `<vm>-<dev>.qcow2` is used, which reconcile never recognises (so never deletes).
    """
    return f"{vm}-{dev}.{tag.fleet}.{tag.host}.qcow2" if tag.host else f"{vm}-{dev}.qcow2"


def owned_volume_vm(volume: str, prefix: str, fleet: str, host: str) -> str | None:
    """The VM a volume name says it belongs to, when it is exactly one of ours (else None).

    Strict on purpose: our prefix, the 8 hex digits the fleet names VMs with, a plain device
    name, and our fleet id and host, so a disk of another fleet, host or tool never matches.
    """
    pattern = rf"({re.escape(prefix)}[0-9a-f]{{8}})-[A-Za-z0-9]+\.{re.escape(fleet)}\.{re.escape(host)}\.qcow2"
    found = re.fullmatch(pattern, volume)
    return found.group(1) if found else None


def _volume_plan(source: SourceVolume, volume_name: str, mode: CloneMode) -> VolumePlan:
    volume = ET.Element("volume")
    ET.SubElement(volume, "name").text = volume_name
    ET.SubElement(volume, "capacity", unit="bytes").text = str(source.capacity)
    target = ET.SubElement(volume, "target")
    ET.SubElement(target, "format", type="qcow2" if mode == "linked" else source.format)
    if mode == "linked":
        backing = ET.SubElement(volume, "backingStore")
        ET.SubElement(backing, "path").text = source.path
        ET.SubElement(backing, "format", type=source.format)
    path = f"{source.pool_dir.rstrip('/')}/{volume_name}"
    return VolumePlan(volume_name, source.pool, path, source.path, ET.tostring(volume, encoding="unicode"), mode)


def _set_driver_format(disk: ET.Element, fmt: str) -> None:
    driver = disk.find("driver")
    if driver is None:
        driver = ET.SubElement(disk, "driver", name="qemu")
    driver.set("type", fmt)


def _reset_device_paths(domain: ET.Element) -> None:
    """Graphics ports, pty/socket paths and tap names belong to the template's run: let libvirt pick."""
    for graphics in domain.findall("devices/graphics"):
        for attribute in ("port", "tlsPort", "websocket", "socket"):
            graphics.attrib.pop(attribute, None)
        if graphics.get("type") in {"vnc", "spice"}:
            graphics.set("autoport", "yes")
        for listen in graphics.findall("listen"):
            listen.attrib.pop("socket", None)
    for kind in _PATHED:
        for device in domain.findall(f"devices/{kind}"):
            if device.get("type") not in {"pty", "unix"}:
                continue
            device.attrib.pop("tty", None)
            for source in device.findall("source"):
                source.attrib.pop("path", None)


def _set_tag(domain: ET.Element, tag: VmTag) -> None:
    metadata = domain.find("metadata")
    if metadata is None:
        metadata = ET.Element("metadata")
        domain.insert(_after_header(domain), metadata)
    # libvirt keeps one metadata element per namespace: the template's own (<qf:template>) goes
    for old in [child for child in metadata if child.tag.startswith(f"{{{NAMESPACE}}}")]:
        metadata.remove(old)
    metadata.append(tag_element(tag))


def _after_header(domain: ET.Element) -> int:
    """Index just after `<name>`/`<title>`/`<description>`, where libvirt itself puts metadata."""
    index = 0
    for position, child in enumerate(domain):
        if child.tag in {"name", "uuid", "genid", "title", "description"}:
            index = position + 1
    return index
