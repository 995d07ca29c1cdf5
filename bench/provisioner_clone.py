"""Clone time per VM: linked (qcow2 overlay) vs full copy, through the provisioner's own code path.

Each round plans a clone, defines it, creates its disk, starts it and tears it down, exactly as
the service does (`plan_clone` + `execute`). On libvirt's test driver no bytes are copied, so the
figures measure the provisioner's own overhead and the ratio stays near 1. When this machine
can run the VM lab (root, QEMU, libvirtd: `ops.lab`), the same is measured on a real
`qemu:///system` libvirtd in a private namespace with the real Debian template, where a full
copy moves the disk's bytes (define + disk only: booting is not what is compared). Set
`QUICFLEET_BENCH_NO_LAB=1` to skip that part.

Run: `.venv/bin/python -m bench provisioner_clone`
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from ops.lab import Lab, LabError, lab_possible
from services.provisioner import execute
from services.provisioner.core.clone import CloneMode, interface_count, plan_clone
from services.provisioner.core.ports import HypervisorError
from services.provisioner.core.tags import VmTag
from services.provisioner.identities import random_macs, random_uuid
from services.provisioner.libvirt_adapter import LibvirtHypervisor

NODE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "libvirt" / "node.xml"
ROUNDS = 40


def clone_once(hv: LibvirtHypervisor, template: str, mode: CloneMode, index: int, start: bool) -> float:
    """Seconds from plan to a started clone (teardown not counted)."""
    tpl = hv.template(template)
    tag = VmTag("bench", f"b-{index}", datetime.now(UTC), "bench")
    began = time.perf_counter()
    plan = plan_clone(tpl.xml, f"qfbench-{mode}-{index}", random_macs(interface_count(tpl.xml)), tag, tpl.sources, mode,
                      uuid=random_uuid())
    execute.define_and_create_storage(hv, plan)
    if start:
        execute.start(hv, plan)
    elapsed = time.perf_counter() - began
    execute.teardown(hv, plan.name, tuple(v.path for v in plan.volumes))
    return elapsed


def measure(uri: str, template: str, rounds: int, start: bool) -> dict[str, float]:
    """Median ms per clone for each mode, interleaved so drift hits both alike."""
    hv = LibvirtHypervisor(uri)
    hv.open(lambda _event: None)
    samples: dict[str, list[float]] = {"linked": [], "full": []}
    try:
        for index in range(rounds):
            for mode in ("linked", "full"):
                samples[mode].append(clone_once(hv, template, mode, index, start))
    finally:
        hv.close()
    return {mode: statistics.median(values) * 1000 for mode, values in samples.items()}


def report(label: str, figures: dict[str, float]) -> None:
    linked, full = figures["linked"], figures["full"]
    print(f"{label}: linked clone {linked:.2f} ms/VM, full copy {full:.2f} ms/VM, full/linked = {full / linked:.2f}x")


def main() -> None:
    report(f"test driver ({ROUNDS} rounds, define+disk+start)", measure(f"test://{NODE}", "backend-template",
                                                                         ROUNDS, start=True))
    ok, why = lab_possible()
    if os.environ.get("QUICFLEET_BENCH_NO_LAB") or not ok:
        print(f"real QEMU: skipped ({why or 'QUICFLEET_BENCH_NO_LAB is set'})")
        return
    with tempfile.TemporaryDirectory(prefix="qf-bench-lab-") as workdir:
        lab = Lab(Path(workdir), name=f"qf-bench-{os.getpid()}")
        try:
            info = lab.start()
            disk = Path(workdir) / "pool" / "backend-template.qcow2"
            size = disk.stat().st_size / 2**20 if disk.exists() else float("nan")
            report(f"qemu:///system in a lab, Debian template ({size:.0f} MiB qcow2, 10 rounds, define+disk)",
                   measure(info.libvirt_uri, info.template, 10, start=False))
        except (HypervisorError, LabError) as error:
            print(f"real QEMU: failed ({error})")
        finally:
            lab.stop()


if __name__ == "__main__":
    main()
