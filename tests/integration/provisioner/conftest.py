"""A libvirt world per test on `test:///default` (shared in-process, so a second connection sees it).

Each test gets its own template domain and template volume (unique names), its own fleet id and
host, real HTTP/3 backends on 127.0.0.1 for the `static` address strategy, and an observer
connection for checking libvirt independently of the provisioner (and for acting behind its back).
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from ops.natsserver import NatsServer
from services.provisioner.core.tags import NAMESPACE, parse_tag
from services.provisioner.libvirt_adapter import ensure_event_thread
from services.provisioner.settings import ProvisionerSettings
from tests.support.h3server import H3Backend

URI = "test:///default"
POOL = "default-pool"
FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "libvirt" / "template-domain.xml"
VM_MEMORY_MIB = 1
"""Each test's template gives its VMs this much: `test:///default` says 3 MiB are free (its fake NUMA cells'
KiB, read as bytes), so three VMs fit there, as the scaler's placement counts memory, where a
256 MiB one would fit none."""


@dataclass
class World:
    """One test's libvirt objects and the settings that point a provisioner at them."""

    conn: libvirt.virConnect
    template: str
    template_volume: str
    fleet_id: str
    host: str

    def ours(self) -> list[libvirt.virDomain]:
        """Domains tagged with this test's fleet id."""
        found = []
        for dom in self.conn.listAllDomains(0):
            try:
                tag = parse_tag(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, 0))
            except libvirt.libvirtError:
                continue
            if tag is not None and tag.fleet == self.fleet_id:
                found.append(dom)
        return found

    def volume_exists(self, path: str) -> bool:
        try:
            self.conn.storageVolLookupByPath(path)
        except libvirt.libvirtError:
            return False
        return True

    def domain_exists(self, name: str) -> bool:
        try:
            self.conn.lookupByName(name)
        except libvirt.libvirtError:
            return False
        return True

    def settings(self, nats: NatsServer, **overrides: object) -> ProvisionerSettings:
        values: dict[str, object] = {
            "nats_url": nats.url, "libvirt_uri": URI, "template": self.template, "fleet_id": self.fleet_id,
            "host": self.host, "address_strategy": "static", "boot_timeout_s": 30, "reconcile_interval_s": 60,
        }
        return ProvisionerSettings(**(values | overrides))  # type: ignore[arg-type]


def template_xml(name: str, disk: str, memory_mib: int = VM_MEMORY_MIB, vcpus: int = 1) -> str:
    """The fixture template named `name`, its disk at `disk`, its VMs given `memory_mib` and `vcpus`."""
    domain = ET.fromstring(FIXTURE.read_text())
    domain.find("name").text = name  # type: ignore[union-attr]
    memory = domain.find("memory")
    memory.set("unit", "MiB")  # type: ignore[union-attr]
    memory.text = str(memory_mib)  # type: ignore[union-attr]
    domain.find("vcpu").text = str(vcpus)  # type: ignore[union-attr]
    domain.remove(domain.find("uuid"))  # type: ignore[arg-type]
    for entry in domain.iterfind("sysinfo/system/entry[@name='uuid']"):
        entry.text = str(uuid.uuid4())  # libvirt takes the domain's UUID from here: two templates may coexist
    for source in domain.iterfind("devices/disk/source"):
        if source.get("file", "").endswith("backend-template.qcow2"):
            source.set("file", disk)
    return ET.tostring(domain, encoding="unicode")


@pytest.fixture
def world() -> Iterator[World]:
    """A template domain + volume in test:///default, cleaned up (with every VM of the fleet) after."""
    ensure_event_thread()
    conn = libvirt.open(URI)
    suffix = uuid.uuid4().hex[:8]
    pool = conn.storagePoolLookupByName(POOL)
    volume = pool.createXML(
        f"<volume><name>tpl-{suffix}.qcow2</name><capacity unit='MiB'>64</capacity>"
        "<target><format type='qcow2'/></target></volume>", 0,
    )
    conn.defineXML(template_xml(f"tpl-{suffix}", volume.path()))
    state = World(conn, f"tpl-{suffix}", volume.path(), f"test-{suffix}", f"h-{suffix}")
    yield state
    _cleanup(state)
    conn.close()


def _cleanup(state: World) -> None:
    for dom in [*state.ours(), state.conn.lookupByName(state.template)]:
        paths = [s.get("file", "") for s in ET.fromstring(dom.XMLDesc(0)).iterfind("devices/disk/source")]
        if dom.isActive():
            dom.destroy()
        dom.undefine()
        for path in paths:
            if path.startswith("/default-pool/") and state.volume_exists(path):
                state.conn.storageVolLookupByPath(path).delete(0)


@pytest.fixture
async def backends(tmp_path: Path) -> AsyncIterator[list[H3Backend]]:
    """Two real HTTP/3 servers on 127.0.0.1: the static address pool of the test's VMs."""
    async with H3Backend(tmp_path) as first, H3Backend(tmp_path) as second:
        yield [first, second]
