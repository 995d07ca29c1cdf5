"""What this host says about its room in each list: the host's figures from libvirt, one VM's size from the template.

The leader scaler places a create on the host where most template-sized VMs still fit, so the
list carries both halves of that sum. Pure: the fleet reads libvirt (through the port) and the
template's XML, and this turns whatever it got into the `VmList` fields, bounded as the contract
says. What could not be read is None, never a guess: the scaler then places on that host by its
count of VMs, as it did before hosts reported any of this.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from services.provisioner.core.ports import HostFacts
from shared.contract.provisioning import CPUS_MAX, MEMORY_MIB_MAX

MIB = 1024 * 1024
_POWERS = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}


@dataclass(frozen=True)
class Capacity:
    """The capacity fields of one `VmList` (None: not read)."""

    free_memory_mib: int | None = None
    cpus: int | None = None
    vm_memory_mib: int | None = None
    vm_vcpus: int | None = None


UNKNOWN = Capacity()


def measure(facts: HostFacts | None, template_xml: str | None) -> Capacity:
    """The fields for a list reply from what libvirt said (either half may be missing)."""
    memory, vcpus = template_size(template_xml) if template_xml is not None else (None, None)
    return Capacity(
        free_memory_mib=_bounded(facts.free_memory_mib, 0, MEMORY_MIB_MAX) if facts else None,
        cpus=_bounded(facts.cpus, 1, CPUS_MAX) if facts else None,
        vm_memory_mib=_bounded(memory, 1, MEMORY_MIB_MAX),
        vm_vcpus=_bounded(vcpus, 1, CPUS_MAX),
    )


def template_size(xml: str) -> tuple[int | None, int | None]:
    """One clone's memory (MiB, rounded up) and vCPUs: the template's `<memory>` and `<vcpu>`.

    A clone keeps both (`clone.plan_clone` changes neither). `<memory>` is what the guest may
    use at most, so it is what a host must have free for it; a `<vcpu current=…>` runs that many.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, None
    return _memory_mib(root.find("memory")), _vcpus(root.find("vcpu"))


def _memory_mib(element: ET.Element | None) -> int | None:
    """`<memory unit=…>` in MiB, rounded up; libvirt's units, KiB when none is given."""
    if element is None or element.text is None:
        return None
    scale = unit_bytes(element.get("unit", "KiB"))
    try:
        value = int(element.text.strip())
    except ValueError:
        return None
    return None if scale is None else math.ceil(value * scale / MIB)


def unit_bytes(unit: str) -> int | None:
    """Bytes per `unit` as libvirt reads it: `b`/`bytes`, `k`/`KiB` (1024), `KB` (1000), and so on to `E`."""
    unit = unit.strip().lower()
    if unit in ("b", "bytes"):
        return 1
    power = _POWERS.get(unit[:1])
    if power is None or unit[1:] not in ("", "ib", "b"):
        return None
    return int((1000 if unit[1:] == "b" else 1024) ** power)


def _vcpus(element: ET.Element | None) -> int | None:
    """The vCPUs a clone runs with: `current` when the template sets it, else the `<vcpu>` count."""
    if element is None:
        return None
    text = str(element.get("current") or element.text or "")
    try:
        return int(text.strip())
    except ValueError:
        return None


def _bounded(value: int | None, low: int, high: int) -> int | None:
    """`value` capped at the contract's bound; None below its floor (a figure that cannot be true)."""
    if value is None or value < low:
        return None
    return min(value, high)
