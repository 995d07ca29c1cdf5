"""Template versions for the rollout tests: the lab template's disk, changed without mounting it.

A version is a whole disk image with bytes of its own (the push names it by its digest), so each variant
is the template's root disk converted to raw, edited with e2fsprogs' `debugfs -w` (no loop mount, no
root filesystem touched), and converted back to a standalone qcow2. `broken=True` gives a guest whose
init never starts the web server (it sets the template init's own `/run/web.down` switch before the
serving loop): it boots and leases an address, but never passes readiness.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import libvirt

from shared.bus import Bus
from shared.contract.rollout import GetRollout, RolloutChanged, RolloutPhase, RolloutState, RolloutStatus, StartRollout
from shared.contract.templates import HostTemplateVersion, ListTemplates, PushTemplate, TemplateList
from tests.support import wait_until

SERVING_LOOP = "while true; do\n"
WEB_DOWN = "touch /run/web.down  # variant: the web server never starts\n"


def template_disk(uri: str, template: str) -> Path:
    """The template domain's disk file, as libvirt at `uri` has it."""
    conn = libvirt.open(uri)
    try:
        xml = conn.lookupByName(template).XMLDesc()
    finally:
        conn.close()
    found = re.search(r"<source file='([^']+)'", xml)
    assert found, f"{template} has no file disk"
    return Path(found.group(1))


def debugfs(image: Path, *requests: str) -> str:
    """Run debugfs requests on an ext4 image, writable; what it printed (each request echoed first)."""
    script = image.with_suffix(".debugfs")
    script.write_text("\n".join(requests) + "\n")
    argv = ["debugfs", "-w", "-f", str(script), str(image)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def file_text(image: Path, path: str) -> str:
    """A file's text inside the image (debugfs's echo of the request cut off)."""
    return debugfs(image, f"cat {path}").split("\n", 1)[-1]


def variant(source: Path, workdir: Path, label: str, broken: bool = False) -> Path:
    """A standalone qcow2 of `source` with `/etc/quicfleet-version` = label (and a dead web server if broken)."""
    workdir.mkdir(parents=True, exist_ok=True)
    raw, out = workdir / f"{label}.raw", workdir / f"{label}.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(source), str(raw)], check=True, timeout=120)
    (workdir / f"{label}.version").write_text(f"{label}\n")
    requests = [f"write {workdir / f'{label}.version'} /etc/quicfleet-version"]
    if broken:
        init = file_text(raw, "/sbin/init")
        assert SERVING_LOOP in init, "the template's init has no serving loop to stop"
        (workdir / f"{label}.init").write_text(init.replace(SERVING_LOOP, WEB_DOWN + SERVING_LOOP, 1))
        requests += ["rm /sbin/init", f"write {workdir / f'{label}.init'} /sbin/init", "sif /sbin/init mode 0100755"]
    debugfs(raw, *requests)
    assert file_text(raw, "/etc/quicfleet-version") == f"{label}\n"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(out)], check=True, timeout=120)
    raw.unlink()
    return out


async def push(bus: Bus, host: str, disk: Path, version: str) -> HostTemplateVersion:
    """`fleet.prov.<host>.template.push` of a disk file: the version, ready on that host."""
    command = PushTemplate(source=str(disk), version=version)
    return await bus.request(bus.subjects.prov_template_push(host), command, HostTemplateVersion, timeout=180)


async def host_versions(bus: Bus, timeout_s: float = 60.0) -> dict[str, HostTemplateVersion]:
    """Every version the lab's provisioner lists, by name; asked again until it answers within the window
    (under load, with a push or a retire holding its template lock, one window can pass without its answer)."""

    async def listed() -> list[TemplateList]:
        return await bus.gather(bus.subjects.prov_template_list, ListTemplates(), TemplateList, window=2.0)

    lists = await wait_until(listed, timeout_s, 0.5, "the provisioner's template list")
    return {v.version: v for listing in lists for v in listing.versions}


async def start_rollout(bus: Bus, version: str, **settings: object) -> RolloutStatus:
    """`fleet.cmd.rollout.start`."""
    command = StartRollout(version=version, **settings)
    return await bus.request(bus.subjects.cmd_rollout_start, command, RolloutStatus, timeout=30)


async def rollout(bus: Bus) -> RolloutState | None:
    """The stored rollout (`fleet.cmd.rollout.status`)."""
    status = await bus.request(bus.subjects.cmd_rollout_status, GetRollout(), RolloutStatus, timeout=30)
    return status.rollout


async def finished(bus: Bus, version: str) -> RolloutState | None:
    """The rollout to `version` once it is over (done or rolled back), else None (for wait_until)."""
    state = await rollout(bus)
    over = state is not None and state.new_version == version and not state.active
    return state if over else None



class RolloutLog:
    """Every `fleet.scaler.rollout` event the leader publishes, in order (the phases a rollout went through)."""

    def __init__(self) -> None:
        self.events: list[RolloutChanged] = []

    async def start(self, bus: Bus) -> RolloutLog:
        await bus.subscribe(bus.subjects.scaler_rollout, RolloutChanged, self._on)
        return self

    async def _on(self, event: RolloutChanged, _msg: object) -> None:
        self.events.append(event)

    def entered(self, version: str, phase: RolloutPhase) -> list[RolloutChanged]:
        """The events of the rollout to `version` that show it in `phase`."""
        return [e for e in self.events if e.new_version == version and e.phase is phase]


def ready_on(event: RolloutChanged, version: str) -> int:
    """How many VMs of `version` the event counts as ready."""
    return sum(row.ready for row in event.versions if row.version == version)
