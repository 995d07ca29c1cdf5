"""`python -m tests.integration.cluster.provisioner_main`: the real provisioner process on `test:///default`.

libvirt's test driver keeps `test:///default` per process, fresh at each start, so this launcher first
defines the template (the fixture domain, its disk a volume of `default-pool`) on a connection it
keeps open, and then runs the provisioner's own entry point, whose connection shares that state.
The template gives each VM 1 MiB: the test driver says 3 MiB are free, so three VMs fit, as the
scaler's placement counts memory.
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt

URI = "test:///default"
POOL = "default-pool"
FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "libvirt" / "template-domain.xml"
VM_MEMORY_MIB = 1


def template_xml(name: str, disk: str) -> str:
    """The fixture template renamed `name`, its system disk at `disk`, its VMs given VM_MEMORY_MIB."""
    domain = ET.fromstring(FIXTURE.read_text())
    domain.find("name").text = name  # type: ignore[union-attr]
    memory = domain.find("memory")
    assert memory is not None
    memory.set("unit", "MiB")
    memory.text = str(VM_MEMORY_MIB)
    uuid = domain.find("uuid")
    if uuid is not None:
        domain.remove(uuid)
    for source in domain.iterfind("devices/disk/source"):
        if source.get("file", "").endswith("backend-template.qcow2"):
            source.set("file", disk)
    return ET.tostring(domain, encoding="unicode")


def define_template(conn: libvirt.virConnect, name: str) -> None:
    volume = conn.storagePoolLookupByName(POOL).createXML(
        f"<volume><name>{name}.qcow2</name><capacity unit='MiB'>64</capacity>"
        "<target><format type='qcow2'/></target></volume>", 0,
    )
    conn.defineXML(template_xml(name, volume.path()))


def main() -> int:
    from services.provisioner.__main__ import main as provisioner_main

    conn = libvirt.open(URI)  # held until exit: the driver's state lives while a connection does
    define_template(conn, os.environ.get("QUICFLEET_TEMPLATE", "backend-template"))
    return provisioner_main()


if __name__ == "__main__":
    sys.exit(main())
