"""Start the lab by hand, or clean up after one whose owner died.

    python -m ops.lab up [--hosts 2] [--name N] [--workdir D]   start, print where things are, wait for
                                                               Ctrl-C (or SIGTERM), then tear it all down
    python -m ops.lab list                                     recorded labs and whether their owner runs
    python -m ops.lab reclaim [--prefix P]                     tear down every recorded lab whose owner died

`up` stays in the foreground on purpose: it is the lab's owner, so a lab whose `up` was killed
is recognisably stale and `reclaim` (or the next `up` under the same name) removes it.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from ops.lab import Lab, LabError, LabInfo, lab_possible, owner, reclaim_stale
from ops.lab.twohost import TwoHostLab

HOST_NAMES = ("lab-a", "lab-b")


def _describe(info: LabInfo, host: str) -> str:
    return (f"{host}: namespace {info.namespace}, guests {info.subnet}.0/24\n"
            f"  QUICFLEET_HOST={host} QUICFLEET_LIBVIRT_URI='{info.libvirt_uri}'\n"
            f"  QUICFLEET_NETWORK={info.network} QUICFLEET_TEMPLATE={info.template}")


def _hints(pair: TwoHostLab | None, infos: list[LabInfo]) -> str:
    """How to use what was started, in words an operator can paste."""
    lines = [_describe(info, host) for info, host in zip(infos, HOST_NAMES, strict=False)]
    first = infos[0].namespace
    if pair is None:
        lines.append(f"run things inside with: ip netns exec {first} <command>")
        return "\n".join(lines)
    lines += [
        f"wire: {first} {pair.wire_address(0)} <-> {infos[1].namespace} {pair.wire_address(1)} (veth qflink)",
        f"NATS in {first} listening on 0.0.0.0: the services there use nats://127.0.0.1:<port>,",
        f"  the provisioner in {infos[1].namespace} uses nats://{pair.wire_address(0)}:<port>",
        "run each host's provisioner: ip netns exec <namespace> env <its variables> python -m services.provisioner",
    ]
    return "\n".join(lines)


def _wait_for_a_signal() -> None:
    """Block until SIGINT or SIGTERM (the owner stays alive, and the lab with it, until then)."""
    wanted = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    signal.sigwait(wanted)


def up(hosts: int, name: str, workdir: Path) -> int:
    """Start one lab or the two-host pair, wait for a signal, tear down (a second Ctrl-C waits: it stays blocked)."""
    ok, why = lab_possible()
    if not ok:
        print(f"the lab cannot run here: {why}", file=sys.stderr)
        return 2
    lab: Lab | TwoHostLab = TwoHostLab(workdir, name) if hosts == 2 else Lab(workdir, name)
    try:
        started = lab.start()
    except LabError as error:
        print(f"the lab did not start: {error}", file=sys.stderr)
        return 1
    infos = list(started) if isinstance(started, tuple) else [started]
    print(_hints(lab if isinstance(lab, TwoHostLab) else None, infos), flush=True)
    if isinstance(lab, TwoHostLab):
        print("start costs: " + "; ".join(cost.describe() for cost in lab.costs), flush=True)
    print("Ctrl-C tears the lab down", flush=True)
    try:
        _wait_for_a_signal()
    finally:
        lab.stop()
    return 0


def list_labs() -> int:
    for found in owner.recorded():
        print(f"{found.namespace}: {found.describe()}")
    return 0


def reclaim(prefix: str) -> int:
    reclaimed = reclaim_stale(prefix)
    print("reclaimed: " + (", ".join(reclaimed) if reclaimed else "nothing (no recorded lab with a dead owner)"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.lab", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start a lab and keep it until Ctrl-C")
    start.add_argument("--hosts", type=int, choices=(1, 2), default=2)
    start.add_argument("--name", default="quicfleet-lab2")
    start.add_argument("--workdir", type=Path, default=Path(".run/lab2"))
    commands.add_parser("list", help="recorded labs and their owners")
    sweep = commands.add_parser("reclaim", help="tear down labs whose owner died")
    sweep.add_argument("--prefix", default="")
    args = parser.parse_args(argv)
    if args.command == "up":
        return up(args.hosts, args.name, args.workdir)
    if args.command == "list":
        return list_labs()
    return reclaim(args.prefix)


if __name__ == "__main__":
    sys.exit(main())
