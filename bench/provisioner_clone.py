"""Clone time per VM: linked (qcow2 overlay) vs full copy, through the provisioner's own code path.

Each round plans a clone, defines it, creates its disk, starts it and tears it down, exactly as
the service does (`plan_clone` + `execute`). On libvirt's test driver no bytes are copied, so the
figures measure the provisioner's own overhead and the ratio stays near 1; on `qemu:///system`
with a real template (`QUICFLEET_BENCH_QEMU_TEMPLATE`, run as root) the full copy moves the disk.

Run: `.venv/bin/python -m bench provisioner_clone`
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from services.provisioner import execute
from services.provisioner.clone import CloneMode, interface_count, plan_clone, random_macs
from services.provisioner.libvirt_adapter import LibvirtHypervisor
from services.provisioner.ports import HypervisorError
from services.provisioner.tags import VmTag

NODE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "libvirt" / "node.xml"
ROUNDS = 40


def clone_once(hv: LibvirtHypervisor, template: str, mode: CloneMode, index: int, start: bool) -> float:
    """Seconds from plan to a started clone (teardown not counted)."""
    tpl = hv.template(template)
    tag = VmTag("bench", f"b-{index}", datetime.now(UTC), "bench")
    began = time.perf_counter()
    plan = plan_clone(tpl.xml, f"qfbench-{mode}-{index}", random_macs(interface_count(tpl.xml)), tag, tpl.sources, mode)
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
                samples[mode].append(clone_once(hv, template, mode, index, start))  # type: ignore[arg-type]
    finally:
        hv.close()
    return {mode: statistics.median(values) * 1000 for mode, values in samples.items()}


def report(label: str, figures: dict[str, float]) -> None:
    linked, full = figures["linked"], figures["full"]
    print(f"{label}: linked clone {linked:.2f} ms/VM, full copy {full:.2f} ms/VM, full/linked = {full / linked:.2f}x")


def main() -> None:
    report(f"test driver ({ROUNDS} rounds, define+disk+start)", measure(f"test://{NODE}", "backend-template",
                                                                         ROUNDS, start=True))
    template = os.environ.get("QUICFLEET_BENCH_QEMU_TEMPLATE")
    if not template:
        print("qemu:///system: skipped (set QUICFLEET_BENCH_QEMU_TEMPLATE to a defined template domain)")
        return
    try:
        report(f"qemu:///system template {template} (5 rounds, define+disk)",
               measure("qemu:///system", template, 5, start=False))
    except HypervisorError as error:
        print(f"qemu:///system: skipped ({error})")


if __name__ == "__main__":
    main()
