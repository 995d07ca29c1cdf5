"""Template versions on a real libvirtd: the bytes go through libvirt's upload stream and the chain is real qcow2.

A private libvirtd (ops.lab.daemons, in a namespace of this test) with a directory pool; no VM is
started: a domain that is only defined holds a base as firmly as a running one, which is the point.
"""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from ops.lab import daemons, netns
from ops.natsserver import NatsServer
from services.provisioner.bootstrap import bootstrap
from services.provisioner.settings import ProvisionerSettings
from shared.bus import Bus
from shared.contract.base import ErrorCode
from shared.contract.templates import HostTemplateVersion, ListTemplates, PushTemplate, RetireTemplate, TemplateList
from shared.errors import BusError

DOMAIN = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
<os><type arch='x86_64'>hvm</type></os><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{disk}'/>
<target dev='vda' bus='virtio'/></disk></devices></domain>"""


@pytest.fixture
def real_libvirt(e2e_workdir: Path) -> Iterator[tuple[str, Path]]:
    """A private libvirtd (its URI) and a directory pool `p` at the returned path; stopped after."""
    name = f"qft-{uuid.uuid4().hex[:6]}"
    root = e2e_workdir / name
    paths = daemons.DaemonPaths(root / "libvirt")
    netns.create(name)
    process = None
    try:
        process = daemons.start(name, paths, virtlogd=False)
        pool_dir = root / "pool"
        pool_dir.mkdir()
        conn = libvirt.open(paths.uri)
        conn.storagePoolCreateXML(f"<pool type='dir'><name>p</name><target><path>{pool_dir}</path></target></pool>", 0)
        conn.close()
        yield paths.uri, pool_dir
    finally:
        daemons.stop(paths, process)
        netns.delete(name)


def _template(uri: str, pool_dir: Path) -> Path:
    """A real qcow2 with some data in it (qemu-img), as the disk of domain `tpl`."""
    disk = pool_dir / "tpl.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x5a 0 1M", str(disk)], check=True, capture_output=True)
    conn = libvirt.open(uri)
    conn.storagePoolLookupByName("p").refresh(0)
    conn.defineXML(DOMAIN.format(name="tpl", disk=disk))
    conn.close()
    return disk


def _hold(uri: str, pool_dir: Path, base: str) -> None:
    """A defined, never started domain whose overlay (made by qemu-img) stands on `base`."""
    overlay = pool_dir / "holder.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, str(overlay)], check=True)
    conn = libvirt.open(uri)
    conn.storagePoolLookupByName("p").refresh(0)
    conn.defineXML(DOMAIN.format(name="holder", disk=overlay))
    conn.close()


def _release(uri: str, pool_dir: Path) -> None:
    conn = libvirt.open(uri)
    conn.lookupByName("holder").undefine()
    conn.storageVolLookupByPath(str(pool_dir / "holder.qcow2")).delete(0)
    conn.close()


async def test_a_push_uploads_checks_and_a_defined_overlay_holds_the_base(
    bus: Bus, nats_server: NatsServer, real_libvirt: tuple[str, Path]
) -> None:
    """The base is the template's exact bytes with the right virtual size; a defined domain whose overlay stands
    on it makes the retire `conflict` (named, from the volume's chain), and once it is gone the base is deleted."""
    uri, pool_dir = real_libvirt
    disk = _template(uri, pool_dir)
    settings = ProvisionerSettings(nats_url=nats_server.url, libvirt_uri=uri, template="tpl", host="h1",
                                   fleet_id=f"t-{uuid.uuid4().hex[:6]}", address_strategy="static")
    async with bootstrap(settings):
        pushed = await bus.request(bus.subjects.prov_template_push("h1"), PushTemplate(source="tpl", version="v1"),
                                   HostTemplateVersion, timeout=60)
        assert pushed.digest == hashlib.sha256(disk.read_bytes()).hexdigest() and pushed.base is not None
        base = Path(pushed.base)
        assert base.read_bytes() == disk.read_bytes()
        conn = libvirt.open(uri)
        assert conn.storageVolLookupByPath(str(base)).info()[1] == 16 << 20  # the virtual size, read again
        conn.close()
        _hold(uri, pool_dir, str(base))
        (listed,) = await bus.gather(bus.subjects.prov_template_list, ListTemplates(), TemplateList)
        assert [(v.version, v.in_use) for v in listed.versions] == [("v1", 1)]
        retire = bus.subjects.prov_template_retire("h1")
        with pytest.raises(BusError) as held:
            await bus.request(retire, RetireTemplate(version="v1"), TemplateList, timeout=30)
        assert held.value.code is ErrorCode.CONFLICT and "holder (defined)" in held.value.message
        assert base.exists()
        _release(uri, pool_dir)
        left = await bus.request(retire, RetireTemplate(version="v1"), TemplateList, timeout=30)
    assert left.versions == [] and not base.exists() and disk.exists()
