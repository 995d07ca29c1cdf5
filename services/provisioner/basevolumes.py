"""Template base images in libvirt: copy one into the host's pool, hash it, and read every domain's chain.

Blocking libvirt calls on a connection of its own (libvirt connections are thread-safe; this one never
registers events). The bytes move through libvirt's storage API: a new volume and an `upload` stream,
read from the source's `download` stream or its file on this host. Where the driver has no upload (the
test driver) and the pool is a directory on this host, the bytes are written to the volume's file
instead. Decisions (names, metadata, the chain rule) are pure, in core/versions.py and core/backing.py.
"""

from __future__ import annotations

import hashlib
import os
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass

import libvirt

from services.provisioner.core.backing import MAX_DEPTH, DomainChain, domain_chain_paths, volume_backing
from services.provisioner.core.clone import template_disk_paths
from services.provisioner.core.ports import HypervisorError, TemplateMissing
from services.provisioner.core.tags import parse_tag
from services.provisioner.core.versions import base_volume_xml, has_backing_file
from services.provisioner.libvirt_errors import errors, failure

CHUNK = 1 << 20
_STATES = {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_PAUSED: "paused",
           libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended", libvirt.VIR_DOMAIN_SHUTOFF: "defined"}


@dataclass(frozen=True)
class Image:
    """A disk image to push: its path, bytes and format, and the domain XML its version is defined from."""

    path: str
    size: int
    format: str
    domain_xml: str
    uri: str | None = None
    """The libvirt URI it is read from (None: this host: its file, or this connection's volume)."""


class BaseVolumes:
    """Base images and chains on one libvirt URI."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._conn: libvirt.virConnect | None = None
        self._sources: dict[str, libvirt.virConnect] = {}
        self._lock = threading.Lock()

    @property
    def conn(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is None or not _alive(self._conn):
                with errors(f"cannot connect to {self.uri}"):
                    self._conn = libvirt.open(self.uri)
            return self._conn

    def source_conn(self, uri: str | None) -> libvirt.virConnect:
        """This host's connection, or one to the host a push reads from (kept open while it answers)."""
        if uri is None:
            return self.conn
        with self._lock:
            conn = self._sources.get(uri)
            if conn is None or not _alive(conn):
                with errors(f"cannot connect to the source {uri}"):
                    conn = self._sources[uri] = libvirt.open(uri)
            return conn

    def close(self) -> None:
        with self._lock:
            conns = [self._conn, *self._sources.values()]
            self._conn, self._sources = None, {}
        for conn in conns:
            if conn is not None:
                with suppress(libvirt.libvirtError):
                    conn.close()

    # --- reading ------------------------------------------------------------------------------
    def domain_xml(self, name: str, uri: str | None = None) -> str | None:
        try:
            return str(self.source_conn(uri).lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise failure(f"reading domain {name}", error) from None

    def image(self, source: str, template: str, uri: str | None = None) -> Image:
        """The image `source` names on `uri` (None: here): a domain's one writable disk, or a disk path (then
        defined like this host's `template`)."""
        if source.startswith("/"):
            xml = self.domain_xml(template)
            if xml is None:
                raise TemplateMissing(f"template domain '{template}' does not exist on {self.uri}")
            path = source
        else:
            found = self.domain_xml(source, uri)
            if found is None:
                raise TemplateMissing(f"domain '{source}' does not exist on {uri or self.uri}")
            xml, disks = found, template_disk_paths(found)
            if len(disks) != 1:
                raise HypervisorError(f"domain '{source}' has {len(disks)} writable disks; a version needs one")
            path = disks[0]
        size, fmt = self._size_and_format(path, uri)
        return Image(path, size, fmt, xml, uri)

    def _size_and_format(self, path: str, uri: str | None) -> tuple[int, str]:
        volume = self._volume(path, uri)
        if volume is not None:
            described = ET.fromstring(volume.XMLDesc(0))
            if volume_backing(volume.XMLDesc(0)) is not None:
                raise HypervisorError(f"{path} has a backing file itself: push a flattened image")
            fmt = described.find("target/format")
            return int(volume.info()[1]), fmt.get("type", "raw") if fmt is not None else "raw"
        if uri is not None or not os.path.isfile(path):
            raise TemplateMissing(f"{path} is neither a volume on {uri or self.uri} nor a file on this host")
        with open(path, "rb") as file:
            header = file.read(512)
        if has_backing_file(header):
            raise HypervisorError(f"{path} has a backing file itself: push a flattened image")
        return os.path.getsize(path), "qcow2" if header[:4] == b"QFI\xfb" else "raw"

    def _volume(self, path: str, uri: str | None = None) -> libvirt.virStorageVol | None:
        try:
            return self.source_conn(uri).storageVolLookupByPath(path)
        except libvirt.libvirtError:
            return None

    def chunks(self, path: str, uri: str | None = None) -> Iterator[bytes]:
        """The image's bytes: from its file on this host, else through the download stream of `uri`'s libvirt."""
        if uri is None and os.path.isfile(path):
            with open(path, "rb") as file:
                while block := file.read(CHUNK):
                    yield block
            return
        volume = self._volume(path, uri)
        if volume is None:
            raise TemplateMissing(f"cannot read {path}: no file on this host and no volume on {uri or self.uri}")
        with errors(f"downloading {path}"):
            stream = volume.connect().newStream(0)
            volume.download(stream, 0, 0, 0)
            while block := stream.recv(CHUNK):
                if isinstance(block, int):  # -2: would block (a blocking stream does not say it)
                    continue
                yield block
            stream.finish()

    def digest(self, path: str, uri: str | None = None) -> tuple[str, int]:
        """sha256 (hex) and length of the bytes at `path`, read as `chunks` reads them."""
        hashed, length = hashlib.sha256(), 0
        for block in self.chunks(path, uri):
            hashed.update(block)
            length += len(block)
        return hashed.hexdigest(), length

    def pool_of(self, template: str) -> libvirt.virStoragePool:
        """The pool of the template's disk: base images go where clones' overlays are made."""
        xml = self.domain_xml(template)
        if xml is None:
            raise TemplateMissing(f"template domain '{template}' does not exist on {self.uri}")
        disks = template_disk_paths(xml)
        volume = self._volume(disks[0]) if disks else None
        if volume is None:
            raise TemplateMissing(f"template '{template}' has no disk in a storage pool on {self.uri}")
        return volume.storagePoolLookupByVolume()

    def volume_path(self, pool: libvirt.virStoragePool, name: str) -> str | None:
        try:
            return str(pool.storageVolLookupByName(name).path())
        except libvirt.libvirtError:
            return None

    def chains(self) -> list[DomainChain]:
        """Every domain of the host (any state) with every path of its disks' chains, XML and volumes both."""
        with errors("listing domains"):
            domains = self.conn.listAllDomains(0)
        found = []
        for dom in domains:
            try:
                xml = dom.XMLDesc(0)
                state = _STATES.get(dom.state()[0], "other")
            except libvirt.libvirtError:
                continue  # gone meanwhile
            tag = parse_tag(xml)
            paths = frozenset(p for start in domain_chain_paths(xml) for p in self._walk(start))
            version = tag.version if tag is not None else None
            found.append(DomainChain(dom.name(), "pooled" if tag is not None and tag.pooled else state, paths, version))
        return found

    def all_xml(self) -> list[tuple[str, str]]:
        """(name, inactive XML) of every domain: version domains are found by their metadata."""
        with errors("listing domains"):
            domains = self.conn.listAllDomains(0)
        listed = []
        for dom in domains:
            try:
                listed.append((dom.name(), dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
            except libvirt.libvirtError:
                continue
        return listed

    def _walk(self, path: str) -> list[str]:
        """`path` and the backing files its volume names, level by level (bounded)."""
        walked = [path]
        for _ in range(MAX_DEPTH):
            volume = self._volume(walked[-1])
            below = volume_backing(volume.XMLDesc(0)) if volume is not None else None
            if below is None or below in walked:
                break
            walked.append(below)
        return walked

    # --- writing ------------------------------------------------------------------------------
    def upload(self, pool: libvirt.virStoragePool, name: str, image: Image) -> str:
        """Make volume `name` in `pool` with the image's bytes; a failure deletes the volume, then raises."""
        with errors(f"creating volume {name}"):
            volume = pool.createXML(base_volume_xml(name, image.size, image.format), 0)
        try:
            self._send(volume, image)
        except BaseException:
            self.delete(str(volume.path()))
            raise
        with suppress(libvirt.libvirtError):
            pool.refresh(0)  # libvirt reads the uploaded image's format and virtual size again
        return str(volume.path())

    def _send(self, volume: libvirt.virStorageVol, image: Image) -> None:
        stream = volume.connect().newStream(0)  # the stream must be on the volume's own connection
        try:
            volume.upload(stream, 0, image.size, 0)
        except libvirt.libvirtError as error:
            if error.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                raise failure(f"uploading into {volume.name()}", error) from None
            self._write_local(str(volume.path()), image)
            return
        with errors(f"uploading into {volume.name()}"):
            for block in self.chunks(image.path, image.uri):
                stream.send(block)
            stream.finish()

    def _write_local(self, target: str, image: Image) -> None:
        """The driver has no upload (the test driver): write the volume's file, when its pool is a local dir."""
        if not os.path.isdir(os.path.dirname(target)):
            raise HypervisorError(f"{self.uri} cannot upload volumes and {target} is not on this host")
        with open(target, "wb") as file:
            for block in self.chunks(image.path, image.uri):
                file.write(block)

    def define(self, xml: str) -> None:
        with errors("defining the version domain"):
            self.conn.defineXML(xml)

    def undefine(self, name: str) -> None:
        with errors(f"undefining {name}"):
            self.conn.lookupByName(name).undefine()

    def delete(self, path: str) -> None:
        """Delete the volume at `path` (gone already is fine)."""
        volume = self._volume(path)
        if volume is not None:
            with errors(f"deleting {path}"):
                volume.delete(0)


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False
