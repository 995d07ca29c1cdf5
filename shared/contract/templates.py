"""Template versions: what a host can clone from, how a version gets there and how it goes away.

Every clone is a qcow2 overlay on a base image, so a template cannot be changed in place under a running
fleet: a new template is pushed as a new *version* (its own base volume on each host, named from its
content digest) and the old one is deleted only when no domain's backing chain still holds it. These
are the provisioner's commands and events for that; the rollout (shared/contract/rollout.py) drives them.

This module imports nothing else of the contract (events.py imports `VersionId` from here).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from shared.contract.base import Event, Message, Model, Name, Reason, utcnow

VersionId = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
"""A version's name on every host: the push's label, or the first 12 hex digits of its digest."""
Digest = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
"""The sha256 of a base image's bytes, lower-case hex: the same bytes give the same digest on every host."""
SourcePath = Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=r"^[^\x00]+$")]
"""A domain name or an absolute disk path, as the host that reads it knows it."""
LibvirtUri = Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=r"^[a-z0-9+]+:/\S*$")]
"""A libvirt connection URI (`qemu+ssh://kvm1/system`, `qemu:///system`)."""
TemplateEpoch = Annotated[int, Field(ge=0, le=2**53)]
"""The leader epoch (as `provisioning.Epoch`; repeated here so this module imports no other model)."""
VERSIONS_MAX = 200
"""Versions one host lists at most."""


class TemplateVersion(Model):
    """One version of a template: what it is (the same on every host that has it)."""

    template: Name = Field(description="The template domain it was pushed as a version of (e.g. backend-template).")
    version: VersionId
    digest: Digest = Field(description="sha256 of the base image's bytes (checked after the copy).")
    identity: bool = Field(default=False, description="Its guests send their UUID in `x-quicfleet-vm` (declared).")
    vcpus: Annotated[int, Field(ge=1, le=2**16)] | None = Field(default=None, description="vCPUs one VM is given.")
    memory_mib: Annotated[int, Field(ge=1, le=2**32)] | None = Field(
        default=None, description="Memory one VM is given, MiB rounded up."
    )
    size_bytes: Annotated[int, Field(ge=0, le=2**60)] | None = Field(default=None, description="The image's length.")
    created_at: datetime


class HostTemplateVersion(TemplateVersion):
    """A version as one host has it: ready or not, and how many domains hold its base image."""

    host: Name
    ready: bool = Field(
        default=False,
        description="Its base image is complete and its digest checked on this host; clones may use it.",
    )
    in_use: Annotated[int, Field(ge=0, le=100_000)] = Field(
        default=0, description="Domains of this host (any state) with its base image in their backing chain.",
    )
    protected: Reason | None = Field(
        default=None, description="Why it may not be retired (a rollout may still roll back to it); None: not.",
    )
    base: SourcePath | None = Field(default=None, description="The base volume's path on this host.")


class PushTemplate(Message):
    """`fleet.prov.<host>.template.push`: make a new version from a domain's disk or a disk image on this host.

    The provisioner copies the image into its own storage pool through libvirt (volume upload), computes
    its sha256 and checks it (against `digest` too when given: a push to a second host names the digest
    the first one reported), then records the version and publishes `TemplateVersionReady`. Pushing the
    same bytes again answers with the version already there. Answered with the `HostTemplateVersion`.
    """

    source: SourcePath = Field(description="A domain (its first writable disk is the image) or a disk's path.")
    source_uri: LibvirtUri | None = Field(
        default=None, description="libvirt URI where `source` lives (e.g. qemu+ssh://kvm1/system): the image is "
        "downloaded from there through libvirt's storage API; None: this host.",
    )
    version: VersionId | None = Field(default=None, description="The label; None: the digest's first 12 digits.")
    digest: Digest | None = Field(default=None, description="The digest the copy must have (else `conflict`).")
    epoch: TemplateEpoch | None = Field(default=None, description="Leader epoch when the scaler sends it.")


class RetireTemplate(Message):
    """`fleet.prov.<host>.template.retire`: delete a version's base image on this host.

    Refused with `conflict` (naming the domain) while any domain of the host, running, paused, pooled or
    only defined, has the base in its backing chain, or while the version is protected. Unknown:
    `not_found`. Answered with the host's `TemplateList` after the deletion.
    """

    version: VersionId
    epoch: TemplateEpoch | None = None


class ProtectTemplate(Message):
    """`fleet.prov.<host>.template.protect`: set or clear a version's protection against retirement.

    A rollout protects the version it may roll back to, and clears it when it can no longer; the mark
    is kept in libvirt with the version, so it survives restarts. Answered with the `HostTemplateVersion`.
    """

    version: VersionId
    protected: bool
    reason: Reason | None = Field(default=None, description="Why (shown when a retire is refused).")
    epoch: TemplateEpoch | None = None


class ListTemplates(Message):
    """`fleet.prov.template.list`: every provisioner answers with its `TemplateList` (scatter-gather)."""


class TemplateList(Model):
    """One host's template versions, with the domains that hold each one's base image."""

    host: Name
    template: Name | None = Field(default=None, description="The host's template domain (version None's source).")
    versions: Annotated[list[HostTemplateVersion], Field(max_length=VERSIONS_MAX)] = []
    unversioned_in_use: Annotated[int, Field(ge=0, le=100_000)] = Field(
        default=0, description="Domains cloned from the template domain itself (created with `version` None).",
    )


class TemplateVersionReady(Event):
    """`fleet.template.ready`: a version's base image is complete and checked on `host`."""

    host: Name
    template: Name
    version: VersionId
    digest: Digest
    at: datetime = Field(default_factory=utcnow)


class TemplateVersionRetired(Event):
    """`fleet.template.retired`: a version's base image was deleted on `host` (no domain held it)."""

    host: Name
    version: VersionId
    digest: Digest | None = None
    at: datetime = Field(default_factory=utcnow)
