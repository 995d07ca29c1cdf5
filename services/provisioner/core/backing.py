"""The backing-chain rule: when a template version's base image may be deleted on this host.

Every clone is a qcow2 overlay whose backing file is a base image; deleting that base under any
overlay corrupts it for good, whether its domain runs, is paused, sits in the warm pool or is only
defined. So a base goes only when no domain of the host has it anywhere in its chain, as read both
from the domain XML (`<backingStore>`, nested) and from the volumes themselves (a defined domain's
XML names its overlay only; the overlay names its backing file), and never while a rollout may still
roll back to its version. Pure: the glue (`services/provisioner/basevolumes.py`) reads libvirt.
"""

from __future__ import annotations

import posixpath
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MAX_DEPTH = 32
"""Backing chains deeper than this are cut (a loop in a broken image must not hang the walk)."""


@dataclass(frozen=True)
class DomainChain:
    """One domain of the host and every path its disks stand on."""

    name: str
    state: str
    """In words, for the refusal: `running`, `paused`, `defined`, ... (pooled VMs are paused)."""
    paths: frozenset[str]
    """Each disk's source and every backing file below it, from the XML and from the volumes."""
    version: str | None = None
    """The version its tag names: a clone is defined before its overlay exists, so this holds it meanwhile."""


@dataclass(frozen=True)
class Verdict:
    """Whether a base image may be deleted, and if not, why (in words a person can act on)."""

    allowed: bool
    reason: str | None = None
    holders: tuple[str, ...] = ()


def normal(path: str) -> str:
    """A path as chains are compared: `//a/./b` and `/a/b` name the same file."""
    if not path:
        return path
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("/") else cleaned  # normpath keeps a leading "//"


def domain_chain_paths(domain_xml: str) -> list[str]:
    """Every file the domain XML shows for its disks: each `<source file>` and the nested `<backingStore>`s."""
    try:
        domain = ET.fromstring(domain_xml)
    except ET.ParseError:
        return []
    found: list[str] = []
    for disk in domain.iterfind("devices/disk"):
        found.extend(_store_paths(disk, 0))
    return found


def _store_paths(store: ET.Element, depth: int) -> list[str]:
    if depth > MAX_DEPTH:
        return []
    source = store.find("source")
    here = [] if source is None else [p for p in (source.get("file"), source.get("dev")) if p]
    below = store.find("backingStore")
    return here + ([] if below is None else _store_paths(below, depth + 1))


def volume_backing(volume_xml: str) -> str | None:
    """The backing file a volume's own XML names (`<backingStore><path>`), or None."""
    try:
        volume = ET.fromstring(volume_xml)
    except ET.ParseError:
        return None
    path = volume.findtext("backingStore/path")
    return path.strip() if path and path.strip() else None


def may_delete(
    base: str, version: str | None, domains: Iterable[DomainChain], protected: Mapping[str, str]
) -> Verdict:
    """May `base` (the image of `version`) be deleted, given every domain of the host and the protected versions?

    `domains` must be all of them (running, paused, pooled, defined), the version's own template domain
    left out; `protected` maps a version to why it is kept (a rollout may still roll back to it).
    """
    if version is not None and version in protected:
        return Verdict(False, f"version {version} is protected: {protected[version]}")
    wanted = normal(base)
    holders = [d for d in domains if wanted in {normal(p) for p in d.paths} or _tagged(d, version)]
    if not holders:
        return Verdict(True)
    named = ", ".join(f"{d.name} ({d.state})" for d in holders[:5])
    more = f" and {len(holders) - 5} more" if len(holders) > 5 else ""
    return Verdict(False, f"{base} is in the backing chain of {named}{more}", tuple(d.name for d in holders))


def _tagged(domain: DomainChain, version: str | None) -> bool:
    return version is not None and domain.version == version


def holders_by_base(bases: Iterable[str], domains: Iterable[DomainChain]) -> dict[str, int]:
    """How many domains have each base in their chain (the listing's `in_use`)."""
    wanted = {normal(b): b for b in bases}
    counts = dict.fromkeys(wanted.values(), 0)
    for domain in domains:
        for path in {normal(p) for p in domain.paths} & wanted.keys():
            counts[wanted[path]] += 1
    return counts
