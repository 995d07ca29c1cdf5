"""A template and a second source image in a directory pool of libvirt's test driver, for rollouts to clone.

The test driver has no volume upload, so the provisioner writes a pushed version's base image into a
pool of real files; each image here is a few real bytes, so its digest is a real one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import libvirt

from services.provisioner.libvirt_adapter import ensure_event_thread
from tests.integration.provisioner.conftest import URI, World, template_xml


@dataclass
class Sources:
    """The test's world (template domain `tpl-…` on the pool) and a source domain with other bytes for v2."""

    world: World
    source_v2: str


def _image(pool: libvirt.virStoragePool, directory: Path, name: str) -> str:
    data = b"QFI\xfb\x00\x00\x00\x03" + bytes(8) + os.urandom(2048)
    (directory / name).write_bytes(data)
    xml = (f"<volume><name>{name}</name><capacity>{len(data)}</capacity>"
           "<target><format type='qcow2'/></target></volume>")
    volume = pool.createXML(xml, 0)
    return str(volume.path())


@contextmanager
def sources(tmp_path: Path) -> Iterator[Sources]:
    """The pool, the template and the v2 source; every domain of the test is removed after."""
    ensure_event_thread()
    conn = libvirt.open(URI)
    suffix = uuid.uuid4().hex[:8]
    directory = tmp_path / f"pool-{suffix}"
    directory.mkdir()
    pool = conn.storagePoolCreateXML(
        f"<pool type='dir'><name>ro-{suffix}</name><target><path>{directory}</path></target></pool>", 0
    )
    conn.defineXML(template_xml(f"tpl-{suffix}", _image(pool, directory, "tpl.qcow2")))
    conn.defineXML(template_xml(f"src-{suffix}", _image(pool, directory, "src-v2.qcow2")))
    world = World(conn, f"tpl-{suffix}", str(directory / "tpl.qcow2"), f"test-{suffix}", f"hr-{suffix}")
    try:
        yield Sources(world, f"src-{suffix}")
    finally:
        clones = {dom.name() for dom in world.ours()}
        for dom in conn.listAllDomains(0):
            if suffix in dom.name() or dom.name() in clones:
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        pool.destroy()
        conn.close()
