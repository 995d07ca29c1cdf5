"""A hand-written in-memory `Hypervisor` for unit tests (no libvirt, no threads of its own)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from services.provisioner.core.clone import SourceVolume, VolumePlan
from services.provisioner.core.ports import (
    AddressSource,
    DomainView,
    EventSink,
    HostFacts,
    HypervisorError,
    Template,
    TemplateMissing,
    VolumeView,
)
from services.provisioner.core.tags import NAMESPACE, VmTag, parse_tag, tag_element

TEMPLATE_XML = (Path(__file__).resolve().parents[2] / "fixtures" / "libvirt" / "template-domain.xml").read_text()
DISK = "/fleet-pool/backend-template.qcow2"
IDENTITY_TEMPLATE_XML = TEMPLATE_XML.replace(
    "</name>", '</name><metadata><qf:template xmlns:qf="urn:quicfleet:vm:1"><qf:identity>uuid</qf:identity>'
    "</qf:template></metadata>", 1,
)
"""The fixture template declaring that its guests send `x-quicfleet-vm`."""


class FakeHypervisor:
    """Domains and volumes in dicts; `fail_on` names a method that raises when called; `paused` ones list paused
    (`suspend`/`resume` move them); `facts` is what the host says it has."""

    def __init__(self, has_template: bool = True) -> None:
        self.has_template = has_template
        self.template_xml = TEMPLATE_XML
        self.defined: dict[str, str] = {}
        self.running: set[str] = set()
        self.paused: set[str] = set()
        self.volumes: set[str] = {DISK}
        self.fail_on: str | None = None
        self.facts = HostFacts(cpus=8, free_memory_mib=4096)
        self.calls: list[str] = []

    def _step(self, what: str) -> None:
        self.calls.append(what)
        if self.fail_on == what:
            raise HypervisorError(f"{what} failed on purpose")

    def open(self, on_event: EventSink) -> None:
        self._step("open")

    def close(self) -> None:
        self.calls.append("close")

    def describe(self) -> str:
        return "fake:///"

    def template(self, name: str) -> Template:
        self._step("template")
        if not self.has_template:
            raise TemplateMissing(f"template domain '{name}' does not exist on fake:///")
        return Template(name, self.template_xml, {DISK: SourceVolume(DISK, "fleet-pool", "/fleet-pool", 1 << 26)})

    def define(self, xml: str) -> None:
        self._step("define")
        tag = parse_tag(xml)
        assert tag is not None
        name = xml.split("<name>", 1)[1].split("</name>", 1)[0]
        self.defined[name] = xml

    def create_volume(self, plan: VolumePlan) -> str:
        self._step("create_volume")
        self.volumes.add(plan.path)
        return plan.path

    def start(self, name: str) -> None:
        self._step("start")
        self.running.add(name)

    def suspend(self, name: str) -> None:
        self._step("suspend")
        if name not in self.running:
            raise HypervisorError(f"pausing {name}: the domain is not running")
        self.paused.add(name)

    def resume(self, name: str) -> None:
        self._step("resume")
        if name not in self.running:
            raise HypervisorError(f"resuming {name}: the domain is not running")
        self.paused.discard(name)

    def set_tag(self, name: str, tag: VmTag) -> None:
        """Swap the `<qf:vm>` element of the stored XML, as libvirt's `setMetadata` does."""
        self._step("set_tag")
        if name not in self.defined:
            raise HypervisorError(f"domain {name} no longer exists")
        domain = ET.fromstring(self.defined[name])
        metadata = domain.find("metadata")
        assert metadata is not None
        for old in metadata.findall(f"{{{NAMESPACE}}}vm"):
            metadata.remove(old)
        metadata.append(tag_element(tag))
        self.defined[name] = ET.tostring(domain, encoding="unicode")

    def set_clock(self, name: str) -> None:
        self._step("set_clock")

    def tag(self, name: str) -> VmTag | None:
        """The tag the domain carries now (what a restarted provisioner would read)."""
        return parse_tag(self.defined[name])

    def stop(self, name: str) -> bool:
        self.calls.append("stop")
        self.running.discard(name)
        self.paused.discard(name)
        return name in self.defined

    def undefine(self, name: str) -> bool:
        self.calls.append("undefine")
        return self.defined.pop(name, None) is not None

    def delete_volume(self, path: str) -> bool:
        self.calls.append("delete_volume")
        if path in self.volumes:
            self.volumes.remove(path)
            return True
        return False

    def list_volumes(self, pool: str) -> list[VolumeView]:
        self._step("list_volumes")
        folder = f"/{pool}/"
        return [VolumeView(pool, path.removeprefix(folder), path) for path in sorted(self.volumes)
                if path.startswith(folder)]

    def domains(self) -> list[DomainView]:
        return [view for name in self.defined if (view := self.domain(name)) is not None]

    def domain(self, name: str) -> DomainView | None:
        if name not in self.defined:
            return None
        xml = self.defined[name]
        uuid = xml.split("<uuid>", 1)[1].split("</uuid>", 1)[0] if "<uuid>" in xml else None
        running = name in self.running
        return DomainView(name, running, parse_tag(xml), uuid=uuid, paused=running and name in self.paused)

    def interface_addresses(self, name: str, source: AddressSource) -> Mapping[str, Any]:
        return {}

    def host_facts(self) -> HostFacts:
        self._step("host_facts")
        return self.facts
