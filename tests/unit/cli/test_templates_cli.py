"""`quicfleet template push|list`: the first host's digest binds the others, and the table shows each version."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from ops.cli.templates import push, versions_table
from shared.contract.base import utcnow
from shared.contract.subjects import Subjects
from shared.contract.templates import HostTemplateVersion, PushTemplate, TemplateList

DIGEST = "c0" * 32


class FakeBus:
    """Answers pushes as a provisioner would, remembering what each host was sent."""

    def __init__(self) -> None:
        self.subjects = Subjects()
        self.sent: list[tuple[str, PushTemplate]] = []

    async def request(self, subject: str, model: PushTemplate, result: type[Any], timeout: float = 5.0) -> Any:
        self.sent.append((subject, model))
        return _version(subject.split(".")[2], model.version or DIGEST[:12])

    async def gather(self, *_args: Any, **_kw: Any) -> list[TemplateList]:
        return [TemplateList(host="kvm2"), TemplateList(host="kvm1")]


def _version(host: str, version: str, in_use: int = 0) -> HostTemplateVersion:
    return HostTemplateVersion(template="backend-template", version=version, digest=DIGEST, created_at=utcnow(),
                               host=host, ready=True, in_use=in_use)


async def test_a_push_without_hosts_goes_to_every_host_the_first_ones_digest_binding_the_rest() -> None:
    """Every answering host gets the push in host order; the second carries the first's digest and version."""
    bus = FakeBus()
    done = await push(bus, PushTemplate(source="/srv/v2.qcow2"), [], 5.0)  # type: ignore[arg-type]
    assert [s for s, _ in bus.sent] == ["fleet.prov.kvm1.template.push", "fleet.prov.kvm2.template.push"]
    assert bus.sent[0][1].digest is None and bus.sent[1][1].digest == DIGEST
    assert bus.sent[1][1].version == DIGEST[:12] and [d.host for d in done] == ["kvm1", "kvm2"]


def test_the_list_table_shows_versions_their_use_and_the_template_itself() -> None:
    """Each host's versions appear with in-use counts and protection, then the unversioned template row."""
    listed = TemplateList(host="kvm1", template="backend-template", unversioned_in_use=2,
                          versions=[_version("kvm1", "v2", in_use=3).model_copy(update={"protected": "rollback"})])
    console = Console(width=160, record=True)
    console.print(versions_table([listed]))
    text = console.export_text()
    assert "v2" in text and "rollback" in text and "(backend-template)" in text
    assert DIGEST[:12] in text
