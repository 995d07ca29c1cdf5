"""The warm pool's premise on a real VM (QEMU/TCG in the lab): a paused clone, resumed, answers HTTP/3 as
itself far sooner than a fresh clone boots. Measured on the way: the memory a paused VM keeps, what its
clock and DHCP lease do over the pause, and libvirt's managed save (state to disk, `create()` restores) as
the other way to keep VMs warm. The figures go to "end-to-end figures" at the end of the run.

The pause lasts QUICFLEET_POOL_PAUSE_S seconds (20 by default, so the test stays near a minute); run it
by hand with a few minutes to see what a longer sleep does (docs/services/provisioner.md, "Warm pool").
Pausing, resuming, tagging and setting the clock go through the provisioner's own adapter, so this also
checks them on QEMU. qemu-ga sets a guest's clock only where /sbin/hwclock exists (it looks once per
run), which the busybox template lacks: the test links it in the guest first.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import libvirt
import libvirt_qemu

from ops.lab import Lab, LabInfo, netns
from services.provisioner.core.ports import HypervisorError
from services.provisioner.core.tags import VmTag
from services.provisioner.libvirt_adapter import LibvirtHypervisor
from services.provisioner.readiness import ReadinessProbe
from tests.e2e import vms
from tests.e2e.conftest import TIMINGS

PAUSE_S = float(os.environ.get("QUICFLEET_POOL_PAUSE_S", "20"))


def _first_answer(namespace: str, address: str, uuid: str, since: float, deadline_s: float) -> float:
    """Seconds from `since` (monotonic) to the first HTTP/3 answer from `address` carrying `uuid`, probed
    back to back from inside the lab's namespace with a short timeout, so the figure is not rounded up."""
    probe = ReadinessProbe(timeout_s=1.0)
    last: str | None = "not probed"
    with netns.entered(namespace):
        while time.monotonic() - since < deadline_s:
            last = probe.check(address, uuid)
            if last is None:
                return time.monotonic() - since
    raise AssertionError(f"{address} did not answer as {uuid} within {deadline_s:g} s: {last}")


def _rss_mib(lab_handle: Lab, name: str) -> float:
    pid = int((lab_handle.paths.dir("run") / "qemu" / f"{name}.pid").read_text().strip())
    return netns.rss_kib([pid]) / 1024


def _skew_s(domain: Any) -> float:
    """The guest's wall clock (through its agent) minus the host's, in seconds."""
    guest = domain.getTime()
    return float(guest["seconds"] + guest["nseconds"] / 1e9 - time.time())


def _lease_left_s(conn: Any, network: str, domain: Any) -> float | None:
    """Seconds until the DHCP lease of the domain's MAC expires in libvirt's dnsmasq (None: no lease listed)."""
    macs = {iface.get("hwaddr") for iface in domain.interfaceAddresses(
        libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE).values()}
    for lease in conn.networkLookupByName(network).DHCPLeases():
        if lease["mac"] in macs:
            return float(lease["expirytime"] - time.time())
    return None


def test_a_resumed_pooled_clone_answers_as_itself_sooner_than_a_fresh_boot(lab: LabInfo, lab_handle: Lab) -> None:
    """Boot a clone, pause it (tagged pooled), resume it after the pause: it answers with its own
    x-quicfleet-vm sooner than its fresh boot did; a managed save of it restores and answers as itself too."""
    conn = libvirt.open(lab.libvirt_uri)
    hv = LibvirtHypervisor(lab.libvirt_uri, lab.network)
    name = vms.unique("pool-")
    try:
        domain = vms.clone(conn, lab.template, name)
        uuid = domain.UUIDString().lower()
        started = time.monotonic()
        domain.create()
        address = f"{vms.lease_address(domain)}:443"
        fresh_s = _first_answer(lab.namespace, address, uuid, started, 180)
        # qemu-ga sets the clock only where /sbin/hwclock exists, and checks once per run: link it before asking
        _guest_run(domain, "mkdir -p /sbin && ln -sf /bin/busybox /sbin/hwclock")
        lease_s, skew_before, running_mib = _lease_left_s(conn, lab.network, domain), _skew_s(domain), _rss_mib(
            lab_handle, name)

        hv.set_tag(name, VmTag("e2e-pool", "p-1", datetime.now(UTC), "lab", pooled=True))
        hv.suspend(name)
        view = hv.domain(name)
        assert view is not None and view.paused and view.tag is not None and view.tag.pooled
        time.sleep(PAUSE_S)  # the pause is what is measured here, not a wait for something to happen
        paused_mib = _rss_mib(lab_handle, name)
        resumed_at = time.monotonic()
        hv.resume(name)
        resume_s = _first_answer(lab.namespace, address, uuid, resumed_at, 60)
        drift_s = _skew_s(domain) - skew_before
        how = _resync(hv, name)
        synced_s = _skew_s(domain) - skew_before
        lease_after_s = _lease_left_s(conn, lab.network, domain)

        saving = time.monotonic()
        domain.managedSave()
        save_s = time.monotonic() - saving
        image = lab_handle.paths.dir("lib") / "qemu" / "save" / f"{name}.save"
        image_mib = image.stat().st_size / 2**20
        restoring = time.monotonic()
        domain.create()
        restore_call_s = time.monotonic() - restoring
        restore_s = _first_answer(lab.namespace, address, uuid, restoring, 60)
    finally:
        _remove(conn, name)
        hv.close()
        conn.close()
    assert resume_s < fresh_s, f"resumed in {resume_s:.2f} s, no sooner than the fresh boot's {fresh_s:.2f} s"
    assert paused_mib > 0.25 * running_mib, "a paused VM keeps its memory (a saved one gives it up)"
    assert abs(synced_s) < 2, f"the guest's clock is {synced_s:+.1f} s off after the take's set_clock ({how})"
    TIMINGS.append(
        f"warm pool: fresh clone create -> first HTTP/3 answer {fresh_s:.1f} s; paused {PAUSE_S:g} s, resume -> "
        f"answer {resume_s:.2f} s; qemu RSS running {running_mib:.0f} MiB, paused {paused_mib:.0f} MiB"
    )
    TIMINGS.append(
        f"warm pool: guest clock after the pause {drift_s:+.1f} s off (after the take's {how}: {synced_s:+.2f} s); "
        f"DHCP lease left {_seconds(lease_s)} before the pause, {_seconds(lease_after_s)} after"
    )
    TIMINGS.append(
        f"warm pool, managed save instead: save {save_s:.2f} s, image {image_mib:.0f} MiB on disk, "
        f"create() restores in {restore_call_s:.2f} s, answer after {restore_s:.2f} s"
    )


def _resync(hv: LibvirtHypervisor, name: str) -> str:
    """What the take does after `ready`: set the guest's clock through its agent; says whether it could."""
    try:
        hv.set_clock(name)
    except HypervisorError as error:
        return f"set_clock refused ({str(error)[-70:]})"
    return "set_clock"


def _guest_run(domain: Any, script: str, timeout_s: float = 20.0) -> None:
    """Run `sh -c script` in the guest through its agent and wait for it to end."""
    started = json.loads(libvirt_qemu.qemuAgentCommand(domain, json.dumps(
        {"execute": "guest-exec", "arguments": {"path": "/bin/sh", "arg": ["-c", script]}}), 10, 0))
    status = {"execute": "guest-exec-status", "arguments": {"pid": started["return"]["pid"]}}
    deadline = time.monotonic() + timeout_s
    while not json.loads(libvirt_qemu.qemuAgentCommand(domain, json.dumps(status), 10, 0))["return"]["exited"]:
        assert time.monotonic() < deadline, f"guest command did not end within {timeout_s:g} s: {script}"
        time.sleep(0.1)


def _seconds(value: float | None) -> str:
    return "none" if value is None else f"{value:.0f} s"


def _remove(conn: Any, name: str) -> None:
    """The clone gone, a managed-save image included (libvirt refuses to undefine a domain that has one)."""
    try:
        domain = conn.lookupByName(name)
        if domain.hasManagedSaveImage():
            domain.managedSaveRemove()
    except libvirt.libvirtError:
        pass
    vms.remove(conn, name)
