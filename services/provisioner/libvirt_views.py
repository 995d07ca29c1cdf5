"""Reading libvirt objects into the port's views: a domain's `DomainView`, a disk's `SourceVolume`.

These parse libvirt's XML and metadata and hold no connection, so they live apart from the
adapter, which owns the connection and hands them the objects it looked up.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import libvirt

from services.provisioner.core.clone import SourceVolume
from services.provisioner.core.ports import DomainView
from services.provisioner.core.tags import NAMESPACE, parse_tag
from services.provisioner.libvirt_errors import failure

PAUSED = frozenset({libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PMSUSPENDED})
"""The states a domain is paused in: by hand or libvirt (PAUSED), or by its guest (PMSUSPENDED)."""


def domain_view(dom: libvirt.virDomain) -> DomainView | None:
    """None when the domain vanished while we looked at it."""
    try:
        name, active = dom.name(), bool(dom.isActive())
        tag = tag_of(dom)
        macs = mac_addresses(dom.XMLDesc(0)) if tag is not None else ()
        uuid = dom.UUIDString().lower()
        paused = active and dom.state()[0] in PAUSED
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise failure("reading domain", error) from None
    return DomainView(name, active, tag, macs, uuid, paused)


def tag_of(dom: libvirt.virDomain) -> Any:
    """The domain's tag from its `<metadata>`; None for a domain we never tagged (not ours)."""
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, 0)
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            return None
        raise
    return parse_tag(text)


def mac_addresses(xml: str) -> tuple[str, ...]:
    """The MACs of a domain's interfaces, in the order of its XML."""
    root = ET.fromstring(xml)
    return tuple(mac.get("address", "") for mac in root.findall("devices/interface/mac"))


def source_volume(path: str, volume: libvirt.virStorageVol) -> SourceVolume:
    """A template's disk as a clone plan needs it: its pool, the pool's folder, capacity and format."""
    pool = volume.storagePoolLookupByVolume()
    pool_dir = ET.fromstring(pool.XMLDesc(0)).findtext("target/path") or ""
    fmt = ET.fromstring(volume.XMLDesc(0)).find("target/format")
    kind = fmt.get("type", "raw") if fmt is not None else "raw"
    return SourceVolume(path, pool.name(), pool_dir, volume.info()[1], kind)
