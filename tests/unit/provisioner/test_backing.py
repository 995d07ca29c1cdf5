"""The backing-chain rule: a base image is deleted only when no domain's chain holds it and no rollout may need it."""

from __future__ import annotations

from services.provisioner.core.backing import (
    DomainChain,
    domain_chain_paths,
    holders_by_base,
    may_delete,
    volume_backing,
)

BASE = "/pool/qfbase-0123456789abcdef.h1.qcow2"
NESTED_XML = f"""<domain><name>qf-00000001</name><devices>
<disk type='file' device='disk'><source file='/pool/qf-00000001-vda.f.h1.qcow2'/>
  <backingStore type='file'><source file='/pool/mid.qcow2'/>
    <backingStore type='file'><source file='{BASE}'/><backingStore/></backingStore>
  </backingStore>
</disk>
<disk type='file' device='cdrom'><source file='/iso/seed.iso'/><readonly/></disk>
</devices></domain>"""
OVERLAY_VOLUME_XML = f"""<volume><name>qf-00000002-vda.f.h1.qcow2</name>
<target><path>/pool/qf-00000002-vda.f.h1.qcow2</path>
<format type='qcow2'/></target><backingStore><path>{BASE}</path><format type='qcow2'/></backingStore></volume>"""


def chain(name: str, state: str, *paths: str, version: str | None = None) -> DomainChain:
    return DomainChain(name, state, frozenset(paths), version)


def test_nested_backing_stores_in_the_domain_xml_are_all_read() -> None:
    """Every level of a nested <backingStore> is in the chain read from the domain XML."""
    paths = domain_chain_paths(NESTED_XML)
    assert paths[:3] == ["/pool/qf-00000001-vda.f.h1.qcow2", "/pool/mid.qcow2", BASE]
    assert "/iso/seed.iso" in paths


def test_a_running_domain_whose_nested_chain_holds_the_base_refuses() -> None:
    """A base two levels down in a running domain's chain may not be deleted, and the refusal names the domain."""
    verdict = may_delete(BASE, "v1", [chain("qf-00000001", "running", *domain_chain_paths(NESTED_XML))], {})
    assert not verdict.allowed
    assert verdict.holders == ("qf-00000001",)
    assert "qf-00000001 (running)" in (verdict.reason or "")


def test_a_chain_known_only_from_the_volume_refuses() -> None:
    """A defined domain whose XML names only its overlay is held through the overlay volume's backing file."""
    backing = volume_backing(OVERLAY_VOLUME_XML)
    assert backing == BASE
    held = chain("qf-00000002", "defined", "/pool/qf-00000002-vda.f.h1.qcow2", backing)
    assert not may_delete(BASE, "v1", [held], {}).allowed


def test_paused_and_defined_domains_hold_the_base_like_running_ones() -> None:
    """A paused (pooled) and a defined-not-running domain both keep the base; each is named."""
    domains = [
        chain("qf-0000000a", "paused", "/x.qcow2", BASE), chain("qf-0000000b", "defined", "//pool/./" + BASE[6:]),
    ]
    verdict = may_delete(BASE, "v1", domains, {})
    assert verdict.holders == ("qf-0000000a", "qf-0000000b")
    assert "paused" in (verdict.reason or "") and "defined" in (verdict.reason or "")


def test_a_domain_tagged_with_the_version_holds_it_before_its_overlay_exists() -> None:
    """A clone defined but without its overlay yet is held by its tag's version."""
    verdict = may_delete(BASE, "v1", [chain("qf-0000000c", "defined", "/pool/not-yet.qcow2", version="v1")], {})
    assert not verdict.allowed


def test_a_protected_version_is_refused_even_with_no_holder() -> None:
    """A version a rollout may roll back to is kept, with the protection's reason."""
    verdict = may_delete(BASE, "v1", [], {"v1": "rollout r-7 may roll back to it"})
    assert not verdict.allowed
    assert "rollout r-7" in (verdict.reason or "")


def test_a_base_no_chain_holds_may_be_deleted() -> None:
    """Domains on other bases, and other versions' protection, do not keep this base."""
    domains = [chain("qf-0000000d", "running", "/pool/other.qcow2", version="v2")]
    assert may_delete(BASE, "v1", domains, {"v2": "current"}).allowed


def test_in_use_counts_each_domain_once_per_base() -> None:
    """The listing's in_use counts domains, not paths: a domain listing the base twice counts once."""
    domains = [chain("a", "running", BASE, "/pool/o.qcow2"), chain("b", "paused", BASE), chain("c", "defined", "/z")]
    assert holders_by_base([BASE, "/pool/o.qcow2", "/none"], domains) == {BASE: 2, "/pool/o.qcow2": 1, "/none": 0}


def test_unparsable_xml_gives_no_paths() -> None:
    """Broken XML yields nothing rather than an exception (the glue then sees no chain from it)."""
    assert domain_chain_paths("<domain") == [] and volume_backing("<volume") is None
