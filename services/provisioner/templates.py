"""Template versions on this host: push, list, protect and retire (the glue; rules in core/versions.py, backing.py).

Order is what keeps backing chains valid through any crash: a push writes the base volume, reads it
back and checks its digest, and only then defines the version domain that clones are made from, so no
overlay can be made on a base that is not complete; a retire checks the chain rule over every domain of
the host, removes the version domain (no new clone from it), checks again, and only then deletes the
base. One lock orders this host's template commands. libvirt alone records what exists.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime

import structlog

from services.provisioner.basevolumes import BaseVolumes, Image
from services.provisioner.core.backing import DomainChain, holders_by_base, may_delete
from services.provisioner.core.capacity import template_size
from services.provisioner.core.clone import template_disk_paths
from services.provisioner.core.errors import UnknownVersion, VersionConflict
from services.provisioner.core.tags import template_identity
from services.provisioner.core.versions import (
    VersionMeta,
    base_volume_name,
    parse_version,
    version_domain_name,
    version_domain_xml,
    version_id,
    with_protection,
)
from services.provisioner.settings import ProvisionerSettings
from shared.contract.base import utcnow
from shared.contract.templates import (
    HostTemplateVersion,
    ProtectTemplate,
    PushTemplate,
    RetireTemplate,
    TemplateList,
    TemplateVersionReady,
    TemplateVersionRetired,
)

log = structlog.get_logger("provisioner.templates")
Announce = Callable[[TemplateVersionReady | TemplateVersionRetired], Awaitable[None]]


class Found:
    """One version domain of this host as read from libvirt."""

    def __init__(self, name: str, xml: str, meta: VersionMeta) -> None:
        self.name, self.xml, self.meta = name, xml, meta
        disks = template_disk_paths(xml)
        self.base = disks[0] if disks else ""


class TemplateVersions:
    """This host's template versions, over `BaseVolumes`; `announce` publishes ready and retired events."""

    def __init__(
        self, settings: ProvisionerSettings, store: BaseVolumes, announce: Announce,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.store = store
        self.announce = announce
        self.clock = clock
        self._lock = asyncio.Lock()

    # --- reading ------------------------------------------------------------------------------
    def _found(self) -> list[Found]:
        """Version domains of this host and template (blocking)."""
        listed = []
        for name, xml in self.store.all_xml():
            meta = parse_version(xml)
            if meta is not None and meta.host == self.settings.host and meta.template == self.settings.template:
                listed.append(Found(name, xml, meta))
        return listed

    def _record(self, found: Found, in_use: int) -> HostTemplateVersion:
        memory, vcpus = template_size(found.xml)
        meta = found.meta
        return HostTemplateVersion(
            template=meta.template, version=meta.version, digest=meta.digest,
            identity=template_identity(found.xml), vcpus=vcpus, memory_mib=memory,
            size_bytes=meta.size_bytes, created_at=meta.created_at, host=self.settings.host, ready=True,
            in_use=in_use, protected=meta.protected, base=found.base,
        )

    def _list(self) -> TemplateList:
        found = self._found()
        chains = self._others(found)
        template_xml = self.store.domain_xml(self.settings.template)
        plain = template_disk_paths(template_xml)[:1] if template_xml else []
        counts = holders_by_base([f.base for f in found] + plain, chains)
        return TemplateList(
            host=self.settings.host, template=self.settings.template,
            versions=[self._record(f, counts.get(f.base, 0)) for f in found],
            unversioned_in_use=counts.get(plain[0], 0) if plain else 0,
        )

    def _others(self, found: list[Found]) -> list[DomainChain]:
        """Every domain's chain but the version domains' and the template's own (they define, not hold)."""
        skip = {f.name for f in found} | {self.settings.template}
        return [chain for chain in self.store.chains() if chain.name not in skip]

    async def listing(self) -> TemplateList:
        return await asyncio.to_thread(self._list)

    # --- push ---------------------------------------------------------------------------------
    async def push(self, command: PushTemplate) -> HostTemplateVersion:
        async with self._lock:
            record, fresh = await asyncio.to_thread(self._push, command)
        if fresh:
            await self.announce(TemplateVersionReady(
                host=record.host, template=record.template, version=record.version, digest=record.digest,
            ))
        return record

    def _push(self, command: PushTemplate) -> tuple[HostTemplateVersion, bool]:
        s = self.settings
        image = self.store.image(command.source, s.template, command.source_uri)
        digest, size = self.store.digest(image.path, image.uri)
        if command.digest is not None and command.digest != digest:
            raise VersionConflict(f"{command.source} has digest {digest}, not {command.digest} as asked")
        version = version_id(command.version, digest)
        existing = self._existing(version, digest)
        if existing is not None:
            return self._record(existing, 0), False
        base = self._copy(image, digest, size)
        meta = VersionMeta(s.template, version, digest, self.clock(), s.host, size)
        name = version_domain_name(s.template, version, s.host)
        self.store.define(version_domain_xml(image.domain_xml, name, base, meta))
        log.info("template.version_ready", version=version, digest=digest, base=base, bytes=size)
        found = Found(name, self.store.domain_xml(name) or "", meta)
        return self._record(found, 0), True

    def _existing(self, version: str, digest: str) -> Found | None:
        """The version these bytes already are here (a repeated push), or VersionConflict on a clash."""
        host = self.settings.host
        for found in self._found():
            same_bytes, same_name = found.meta.digest == digest, found.meta.version == version
            if same_bytes and same_name:
                return found
            if same_bytes:
                raise VersionConflict(f"these bytes are already version {found.meta.version} on {host}")
            if same_name:
                raise VersionConflict(f"version {version} on {host} has other bytes ({found.meta.digest})")
        return None

    def _copy(self, image: Image, digest: str, size: int) -> str:
        """Upload into the template's pool and check the copy's digest; a bad copy is deleted."""
        pool = self.store.pool_of(self.settings.template)
        name = base_volume_name(digest, self.settings.host)
        left = self.store.volume_path(pool, name)
        if left is not None:  # a push cut short: no version domain, so no clone was ever made on it
            self._delete_base(left, None)
        base = self.store.upload(pool, name, replace(image, size=size))
        copied, length = self.store.digest(base)
        if copied != digest or length != size:
            self.store.delete(base)
            raise VersionConflict(f"the copy at {base} has digest {copied} ({length} bytes), not {digest}: deleted")
        return base

    # --- protect and retire -------------------------------------------------------------------
    async def protect(self, command: ProtectTemplate) -> HostTemplateVersion:
        async with self._lock:
            return await asyncio.to_thread(self._protect, command)

    def _protect(self, command: ProtectTemplate) -> HostTemplateVersion:
        found = self._one(command.version)
        reason = (command.reason or "protected") if command.protected else None
        self.store.define(with_protection(found.xml, reason))
        log.info("template.protection_set", version=command.version, protected=reason)
        return self._record(Found(found.name, found.xml, replace(found.meta, protected=reason)), 0)

    async def retire(self, command: RetireTemplate) -> TemplateList:
        async with self._lock:
            retired = await asyncio.to_thread(self._retire, command)
            listed = await asyncio.to_thread(self._list)
        await self.announce(TemplateVersionRetired(
            host=self.settings.host, version=retired.meta.version, digest=retired.meta.digest,
        ))
        return listed

    def _retire(self, command: RetireTemplate) -> Found:
        found = self._one(command.version)
        protected = {found.meta.version: found.meta.protected} if found.meta.protected else {}
        self._check(found, protected)
        self.store.undefine(found.name)  # no new clone from it from here on
        try:
            self._delete_base(found.base, found.meta.version)
        except VersionConflict:
            self.store.define(found.xml)  # a clone began meanwhile: the version stays as it was
            raise
        log.info("template.version_retired", version=found.meta.version, base=found.base)
        return found

    def _check(self, found: Found, protected: dict[str, str]) -> None:
        verdict = may_delete(found.base, found.meta.version, self._others([found]), protected)
        if not verdict.allowed:
            raise VersionConflict(f"version {found.meta.version} cannot be retired: {verdict.reason}")

    def _delete_base(self, base: str, version: str | None) -> None:
        """Delete a base only when no chain holds it (checked again right before: a clone may have begun)."""
        verdict = may_delete(base, version, self._others(self._found()), {})
        if not verdict.allowed:
            raise VersionConflict(f"base {base} was not deleted: {verdict.reason}")
        self.store.delete(base)

    def _one(self, version: str) -> Found:
        for found in self._found():
            if found.meta.version == version:
                return found
        raise UnknownVersion(f"no template version {version} of {self.settings.template} on {self.settings.host}")
