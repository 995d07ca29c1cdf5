"""Disks without their domain: which names are ours, and which disks reconcile deletes (all pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from services.provisioner.core.clone import owned_volume_vm, volume_name
from services.provisioner.core.ports import DomainView, VolumeView
from services.provisioner.core.reconcile import ORPHAN_DISK, Disks, RemoveVolume, plan_volumes
from services.provisioner.core.tags import VmTag

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TAG = VmTag("f.1", "r-1", T0, "h1")
TEMPLATE_DISK = "/pool/backend-template.qcow2"


def _volume(name: str, pool: str = "pool") -> VolumeView:
    return VolumeView(pool, name, f"/{pool}/{name}")


def _plan(*volumes: VolumeView, views: tuple[DomainView, ...] = (), busy: tuple[str, ...] = ()) -> list[RemoveVolume]:
    disks = Disks(frozenset({"pool"}), volumes, frozenset({TEMPLATE_DISK}))
    return plan_volumes(disks, views, busy, "qf-", "f.1", "h1")


def test_volume_name_carries_fleet_and_host_and_reads_back() -> None:
    """A clone's disk name names its fleet and host, and only that exact fleet and host read it back."""
    name = volume_name("qf-1234abcd", "vda", TAG)
    assert name == "qf-1234abcd-vda.f.1.h1.qcow2"
    assert owned_volume_vm(name, "qf-", "f.1", "h1") == "qf-1234abcd"
    assert owned_volume_vm(name, "qf-", "f", "h1") is None
    assert owned_volume_vm(name, "qf-", "f.1", "h2") is None
    assert owned_volume_vm(name, "xx-", "f.1", "h1") is None
    assert volume_name("qf-1234abcd", "vda", replace(TAG, host=None)) == "qf-1234abcd-vda.qcow2"


def test_disk_of_ours_without_domain_is_deleted() -> None:
    """A disk named for our fleet and host whose VM has no domain and no task is deleted."""
    orphan = _volume("qf-1234abcd-vda.f.1.h1.qcow2")
    assert _plan(orphan) == [RemoveVolume(orphan, ORPHAN_DISK)]


def test_disk_whose_domain_exists_is_kept() -> None:
    """A domain of that name, ours or anyone's, keeps the disk; so does a tag that lists it."""
    disk = _volume("qf-1234abcd-vda.f.1.h1.qcow2")
    untagged = DomainView("qf-1234abcd", False, None)
    listing = DomainView("qf-99999999", True, replace(TAG, volumes=(disk.path,)))
    assert _plan(disk, views=(untagged,)) == []
    assert _plan(disk, views=(listing,)) == []


def test_disk_of_a_busy_vm_is_kept() -> None:
    """While a clone or teardown task works on the VM its disk is left alone."""
    assert _plan(_volume("qf-1234abcd-vda.f.1.h1.qcow2"), busy=("qf-1234abcd",)) == []


@pytest.mark.parametrize(
    "volume",
    [
        _volume("qf-1234abcd-vda.other.h1.qcow2"),
        _volume("qf-1234abcd-vda.f.1.h2.qcow2"),
        _volume("qf-1234abcd-vda.qcow2"),
        _volume("qf-halfmade-vda.f.1.h1.qcow2"),
        _volume("zz-1234abcd-vda.f.1.h1.qcow2"),
        _volume("qf-1234abcd-vda.f.1.h1.qcow2.bak"),
        _volume("qf-1234abcd-vda.f.1.h1.qcow2", pool="elsewhere"),
        _volume("backend-template.qcow2"),
    ],
    ids=["other-fleet", "other-host", "untagged-name", "not-our-vm-name", "other-prefix", "suffix", "other-pool",
         "template"],
)
def test_disks_not_provably_ours_are_kept(volume: VolumeView) -> None:
    """Another fleet's, host's, prefix's or pool's disk, an old-style name and the template are never deleted."""
    assert _plan(volume) == []


def test_protected_template_disk_is_kept_even_with_our_name() -> None:
    """A template disk is never deleted, whatever its name."""
    disk = _volume("qf-1234abcd-vda.f.1.h1.qcow2")
    disks = Disks(frozenset({"pool"}), (disk,), frozenset({disk.path}))
    assert plan_volumes(disks, (), (), "qf-", "f.1", "h1") == []
