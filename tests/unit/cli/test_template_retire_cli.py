"""`quicfleet template retire`: sent to the hosts that have the version, refused when none has it."""

from __future__ import annotations

from typing import Any

import pytest

from ops.cli.client import CliError
from ops.cli.templates import retire
from shared.contract.base import utcnow
from shared.contract.subjects import Subjects
from shared.contract.templates import HostTemplateVersion, RetireTemplate, TemplateList


def _listing(host: str, *versions: str) -> TemplateList:
    held = [HostTemplateVersion(template="t", version=v, digest="ab" * 32, created_at=utcnow(), host=host, ready=True)
            for v in versions]
    return TemplateList(host=host, versions=held)


class FakeBus:
    """Lists two hosts (only kvm2 has v1) and answers retires with the host's list after it."""

    def __init__(self) -> None:
        self.subjects = Subjects()
        self.sent: list[tuple[str, RetireTemplate]] = []

    async def gather(self, *_args: Any, **_kw: Any) -> list[TemplateList]:
        return [_listing("kvm1", "v2"), _listing("kvm2", "v1", "v2")]

    async def request(self, subject: str, model: RetireTemplate, _result: type[Any], timeout: float = 5.0) -> Any:
        self.sent.append((subject, model))
        return _listing(subject.split(".")[2], "v2")


async def test_retire_goes_only_to_the_hosts_holding_the_version() -> None:
    """Without --host, v1 is retired on kvm2 alone (kvm1 never had it)."""
    bus = FakeBus()
    lists = await retire(bus, "v1", [], 5.0)  # type: ignore[arg-type]
    assert bus.sent == [(Subjects().prov_template_retire("kvm2"), RetireTemplate(version="v1"))]
    assert [t.host for t in lists] == ["kvm2"]


async def test_a_version_no_host_has_is_an_error_before_any_request() -> None:
    """Retiring an unknown version says so and sends nothing."""
    bus = FakeBus()
    with pytest.raises(CliError, match="no host has template version v9"):
        await retire(bus, "v9", [], 5.0)  # type: ignore[arg-type]
    assert bus.sent == []
