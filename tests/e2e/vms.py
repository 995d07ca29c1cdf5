"""Helpers for the end-to-end tier that need no service code: clone the template with libvirt
directly, wait for its DHCP lease, and fetch over HTTP/3 from inside the lab's namespace."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import libvirt

H3_CLIENT = Path(__file__).with_name("h3client.py")


def clone(conn: Any, template: str, name: str) -> Any:
    """A linked clone of `template` (qcow2 overlay in the template's pool), defined, not started."""
    source = conn.lookupByName(template)
    xml = source.XMLDesc()
    base_path = re.search(r"<source file='([^']+)'", xml)
    assert base_path, "template has no file disk"
    base = conn.storageVolLookupByPath(base_path.group(1))
    overlay = base.storagePoolLookupByVolume().createXML(
        f"<volume><name>{name}.qcow2</name><capacity>{base.info()[1]}</capacity>"
        "<target><format type='qcow2'/></target>"
        f"<backingStore><path>{base.path()}</path><format type='qcow2'/></backingStore></volume>"
    )
    xml = xml.replace(f"<name>{template}</name>", f"<name>{name}</name>")
    xml = re.sub(r"<uuid>[^<]*</uuid>", "", xml)
    xml = re.sub(r"<mac address='[^']*'/>", "", xml).replace(base.path(), overlay.path())
    return conn.defineXML(xml)


def remove(conn: Any, name: str) -> None:
    """Destroy, undefine and delete the overlay of a clone (fine when parts are already gone)."""
    try:
        domain = conn.lookupByName(name)
    except libvirt.libvirtError:
        domain = None
    if domain is not None:
        if domain.isActive():
            domain.destroy()
        domain.undefine()
    for pool in conn.listAllStoragePools():
        for volume in pool.listAllVolumes():
            if volume.name() == f"{name}.qcow2":
                volume.delete()


def lease_address(domain: Any, timeout_s: float = 120.0) -> str:
    """The IPv4 address libvirt's DHCP leased to the domain's MAC (waits with a deadline)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = domain.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE)
        for iface in found.values():
            for addr in iface.get("addrs") or []:
                if addr["type"] == libvirt.VIR_IP_ADDR_TYPE_IPV4:
                    return str(addr["addr"])
        time.sleep(0.5)
    raise AssertionError(f"no DHCP lease for {domain.name()} within {timeout_s} s")


def h3_get(wrap: list[str], url: str, timeout_s: float = 90.0) -> dict[str, Any]:
    """GET `url` over HTTP/3 from inside the namespace (`wrap` is `lab.wrap([])`), retrying until
    it answers; returns {"status", "http_version", "body", "headers"}."""
    argv = [*wrap, sys.executable, str(H3_CLIENT), "get", url, "--deadline", str(timeout_s)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s + 30, check=False)
    assert done.returncode == 0, f"HTTP/3 GET {url} failed: {done.stderr.strip()[-600:]}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def guest_exec(uri: str, vm: str, script: str) -> None:
    """Run `sh -c script` inside the guest through its QEMU guest agent (started, not awaited)."""
    command = {"execute": "guest-exec", "arguments": {"path": "/bin/sh", "arg": ["-c", script]}}
    subprocess.run(
        ["virsh", "-c", uri, "qemu-agent-command", vm, json.dumps(command)], check=True, capture_output=True, timeout=30
    )


def domain_uuid(uri: str, vm: str) -> str:
    """The domain's UUID as libvirt reports it (lower case)."""
    conn = libvirt.open(uri)
    try:
        return str(conn.lookupByName(vm).UUIDString()).lower()
    finally:
        conn.close()


def domains_and_volumes(uri: str) -> tuple[set[str], set[str]]:
    """Every domain name and every volume name libvirt at `uri` holds (the orphan check's view)."""
    conn = libvirt.open(uri)
    try:
        domains = {str(d.name()) for d in conn.listAllDomains()}
        volumes = {str(v.name()) for p in conn.listAllStoragePools() for v in p.listAllVolumes()}
    finally:
        conn.close()
    return domains, volumes
