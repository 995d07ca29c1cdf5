"""The reliability matrix's table: each chaos scenario records one row, printed at the end.

A scenario is one fault (F…), one kind of bad input (B…) or the steady baseline (L1). Its test
checks the invariants itself (asserts) and then records what it saw, so the table CI prints is
the evidence: which load was held, how many faults were injected, how many inputs were tried,
the verdict on each invariant it checked and the figures it measured. `make chaos` runs the
tests marked `chaos`; QUICFLEET_CHAOS_LONG=1 runs the long variants the issue's matrix names.

Invariants:
  I1 zero orphans: libvirt's tagged domains and volumes equal the fleet's, after a grace period
  I2 every accepted request got a response (no reset, no timeout)
  I3 every accepted command reached a terminal state exactly once (by request id)
  I4 no service process died, and none grew its RSS by 50 MiB or more
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

INVARIANTS = ("I1", "I2", "I3", "I4")
MATRIX = {
    "L1": "steady load, no fault (the baseline)",
    "F1": "nats-server SIGKILLed and restarted again and again",
    "F2": "NATS down for minutes",
    "F3": "NATS lame-duck stop",
    "F4": "libvirtd restarted while clones are in flight",
    "F5": "provisioner SIGKILLed at each step of a clone",
    "F6": "a VM killed, a VM hung, a guest's web server killed",
    "F7": "scaler leader SIGKILLed halfway through a scale-out",
    "F8": "balancer restarted under load with 10% long requests",
    "F9": "scale-in drain",
    "F10": "`quicfleet up` SIGKILLed during start-up, then started again",
    "B1": "fuzzed commands and events on every subject",
    "B2": "payloads and HTTP headers and bodies over the caps",
    "B3": "absurd scale requests and a flood of scale commands",
    "B4": "malformed QUIC datagrams under load",
    "B5": "handshake floods, stream floods, slow bodies",
    "B6": "NATS authorisation: wrong users and cross-service commands",
}
"""Every scenario of the matrix (issue #20); docs/operations.md's "What survives what" has a row for each."""
RSS_GROWTH_LIMIT_MIB = 50.0


def long_variants() -> bool:
    """Whether to run the matrix's full-length variants (minutes each) instead of the short ones."""
    return os.environ.get("QUICFLEET_CHAOS_LONG", "") == "1"


@dataclass
class Row:
    """What one scenario did and saw; `invariants` maps I1-I4 to "pass", "fail" or "n/a"."""

    scenario: str
    title: str
    load: str = "none"
    faults: int = 0
    inputs: int = 0
    invariants: dict[str, str] = field(default_factory=dict)
    figures: str = ""
    variant: str = field(default_factory=lambda: "long" if long_variants() else "short")

    def verdict(self, name: str) -> str:
        return self.invariants.get(name, "n/a")


ROWS: list[Row] = []


def record(row: Row) -> None:
    """Keep a scenario's row for the table (and for QUICFLEET_CHAOS_TABLE, as JSON lines)."""
    ROWS.append(row)
    target = os.environ.get("QUICFLEET_CHAOS_TABLE")
    if target:
        with Path(target).open("a") as out:
            out.write(json.dumps(asdict(row)) + "\n")


def table_lines(rows: list[Row]) -> list[str]:
    """The rows as a Markdown table, in scenario order (L, F, B; then by number)."""
    head = ["scenario", "variant", "load held", "faults", "inputs", *INVARIANTS, "figures"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in sorted(rows, key=_order):
        cells = [f"{row.scenario} {row.title}", row.variant, row.load, str(row.faults), str(row.inputs),
                 *(row.verdict(name) for name in INVARIANTS), row.figures]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _order(row: Row) -> tuple[int, int, str]:
    kind = "LFB".find(row.scenario[:1])
    digits = "".join(ch for ch in row.scenario[1:] if ch.isdigit())
    return (kind if kind >= 0 else 9, int(digits or 0), row.scenario)
