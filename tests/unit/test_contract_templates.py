"""The template-version contract: commands strict, events tolerant, `version` optional for older peers."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ValidationError

from shared.bus import decode, encode
from shared.contract import events, provisioning, templates
from shared.contract.base import Event, Message, utcnow
from shared.contract.subjects import Subjects
from shared.errors import BusError

DIGEST = "0f" * 32
VERSION = templates.HostTemplateVersion(template="backend-template", version="v2", digest=DIGEST,
                                        created_at=utcnow(), host="h1", ready=True, in_use=2, base="/p/b.qcow2")
MODELS: list[BaseModel] = [
    templates.PushTemplate(source="backend-template-v2", version="v2", source_uri="qemu+ssh://kvm1/system"),
    templates.RetireTemplate(version="v1", epoch=3),
    templates.ProtectTemplate(version="v1", protected=True, reason="rollout may roll back"),
    templates.ListTemplates(),
    templates.TemplateList(host="h1", template="backend-template", versions=[VERSION], unversioned_in_use=1),
    VERSION,
    templates.TemplateVersionReady(host="h1", template="backend-template", version="v2", digest=DIGEST),
    templates.TemplateVersionRetired(host="h1", version="v1"),
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_every_template_model_round_trips(model: BaseModel) -> None:
    """Encoding and decoding gives back an equal model."""
    assert decode(type(model), encode(model)) == model


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_commands_refuse_and_events_ignore_unknown_fields(model: BaseModel) -> None:
    """An extra field is `invalid` in a command or reply, and dropped from an event."""
    data = json.dumps(json.loads(encode(model)) | {"surprise": 1}).encode()
    if isinstance(model, Event):
        assert decode(type(model), data) == model
    else:
        with pytest.raises(BusError):
            decode(type(model), data)


def test_digests_and_version_names_are_bounded() -> None:
    """A digest must be 64 lower-case hex digits and a version a short name safe in libvirt names."""
    with pytest.raises(ValidationError):
        templates.PushTemplate(source="x", digest="ABC")
    with pytest.raises(ValidationError):
        templates.RetireTemplate(version="../v1")
    assert isinstance(templates.PushTemplate(source="/var/lib/libvirt/images/v2.qcow2"), Message)


def test_older_peers_parse_vm_messages_without_a_version_and_newer_ones_carry_it() -> None:
    """CreateVm, VmRecord and VmStateChanged default `version` to None, so messages of older peers still parse."""
    assert decode(provisioning.CreateVm, b'{"request_id": "r-1", "epoch": 1}').version is None
    event = events.VmStateChanged(vm="qf-1", state=events.VmState.READY, version="v2")
    assert decode(events.VmStateChanged, encode(event)).version == "v2"
    record = provisioning.VmRecord(vm="qf-1", state=events.VmState.READY, since=utcnow(), version="v2")
    assert decode(provisioning.VmRecord, encode(record)).version == "v2"


def test_template_subjects_follow_the_prefix_and_host() -> None:
    """Per-host commands carry the host token; the list and events do not."""
    subjects = Subjects("f2")
    assert subjects.prov_template_push("kvm1") == "f2.prov.kvm1.template.push"
    assert subjects.prov_template_retire("kvm1") == "f2.prov.kvm1.template.retire"
    assert subjects.prov_template_protect("kvm1") == "f2.prov.kvm1.template.protect"
    assert (subjects.prov_template_list, subjects.template_ready) == ("f2.prov.template.list", "f2.template.ready")
    with pytest.raises(ValueError):
        subjects.prov_template_push("kvm.1")
