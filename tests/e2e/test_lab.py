"""The lab on its own, no service code: a clone of the template boots, gets a DHCP lease and
answers over HTTP/3 inside the namespace; a stopped lab leaves nothing behind."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from ops.lab import Lab, LabInfo, netns
from services.provisioner.core.addresses import pick_address
from services.provisioner.libvirt_adapter import LibvirtHypervisor
from tests.e2e import vms


@pytest.fixture
def conn(lab: LabInfo) -> Iterator[Any]:
    connection = libvirt.open(lab.libvirt_uri)
    yield connection
    connection.close()


def _agent_address(hv: LibvirtHypervisor, domain: Any, timeout_s: float = 60.0) -> str | None:
    """What the provisioner's `agent` strategy reads for `domain` (adapter, then picker), polled with a deadline."""
    macs = re.findall(r"<mac address='([^']+)'", domain.XMLDesc())
    assert macs, "the clone has no MAC"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = pick_address(hv.interface_addresses(domain.name(), "agent"), macs, 443)
        if found:
            return found
        time.sleep(0.5)
    return None


def test_clone_of_template_answers_over_http3_with_its_lease_address(lab: LabInfo, lab_handle: Lab, conn: Any) -> None:
    """A clone gets a DHCP lease, answers `Server Address: <lease>:443` over HTTP/3, and its guest agent agrees."""
    name = vms.unique("smoke-")
    hv = LibvirtHypervisor(lab.libvirt_uri, lab.network)
    hv.open(lambda _event: None)
    try:
        domain = vms.clone(conn, lab.template, name)
        domain.create()
        address = vms.lease_address(domain)
        answer = vms.h3_get(lab_handle.wrap([]), f"https://{address}:443/")
        from_agent = _agent_address(hv, domain)
    finally:
        hv.close()
        vms.remove(conn, name)
    assert from_agent == f"{address}:443", "the provisioner's `agent` strategy must find the leased address"
    assert answer["status"] == 200
    assert answer["http_version"] == 30
    assert answer["body"] == f"Server Address: {address}:443"
    assert answer["headers"].get("quic-status") == "quic"
    assert 'h3=":443"' in answer["headers"].get("alt-svc", "")


def test_stopped_lab_leaves_no_domain_volume_lease_process_or_namespace(e2e_workdir: Path, lab: LabInfo) -> None:
    """A lab stopped with a running clone loses domain, volumes, leases, daemons, qemu and namespace (twice is safe)."""
    tmp_path = e2e_workdir / "stopped-lab"
    other = Lab(tmp_path / "other", name=f"{lab.namespace}-b")
    info = other.start()
    connection = libvirt.open(info.libvirt_uri)
    domain = vms.clone(connection, info.template, "doomed")
    domain.create()
    connection.close()
    assert netns.pids(info.namespace), "the lab should run daemons and qemu in its namespace"
    other.stop()
    other.stop()
    assert not netns.exists(info.namespace)
    assert not any((tmp_path / "other" / "pool").iterdir())
    assert not any((tmp_path / "other" / "libvirt" / "lib" / "dnsmasq").iterdir()), "lease files left"
    leftover = subprocess.run(
        ["pgrep", "-f", str(tmp_path / "other")], capture_output=True, text=True, check=False
    ).stdout
    assert leftover.strip() == ""
