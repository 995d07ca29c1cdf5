"""The matrix's invariants, checked against the lab after a scenario (see tests/support/chaos.py).

Each check returns the problems it found (empty: the invariant holds), so a scenario can assert
on them and record the verdict in its row.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from shared.bus import Bus
from shared.contract.events import LIVE_STATES, VmState
from shared.contract.provisioning import ListVms, VmList
from tests.e2e import vms
from tests.e2e.fleetwatch import FleetWatch
from tests.e2e.stack import Stack, log_lines
from tests.support import wait_until
from tests.support.chaos import RSS_GROWTH_LIMIT_MIB

ORPHAN_GRACE_S = 60.0
"""One reconcile period (10 s in the lab stack) plus the reaping of a half-made clone, with room."""


async def fleet_says(bus: Bus) -> set[str]:
    """The live VMs every provisioner lists (what the fleet says exists)."""
    lists = await bus.gather(bus.subjects.prov_list, ListVms(), VmList, window=1.0)
    return {r.vm for listing in lists for r in listing.vms if r.state in LIVE_STATES}


def libvirt_holds(uri: str, template: str) -> tuple[set[str], set[str]]:
    """Our domains, and our volumes (named `<vm>-<dev>.…`), in the lab's libvirt."""
    domains, volumes = vms.domains_and_volumes(uri)
    return domains - {template}, volumes - {f"{template}.qcow2"}


def orphans(fleet: set[str], domains: set[str], volumes: set[str]) -> list[str]:
    """I1: a domain or a volume libvirt holds that no live VM of the fleet owns, or the reverse."""
    problems = [f"domain {d} not in the fleet" for d in sorted(domains - fleet)]
    problems += [f"fleet VM {v} has no domain" for v in sorted(fleet - domains)]
    problems += [f"volume {v} owned by no fleet VM" for v in sorted(volumes)
                 if not any(v.startswith(f"{vm}-") for vm in fleet)]
    return problems


async def no_orphans(bus: Bus, uri: str, template: str, timeout: float = ORPHAN_GRACE_S) -> list[str]:
    """I1 within the grace period: wait until libvirt and the fleet agree; the last problems otherwise."""
    last: list[str] = []

    async def agree() -> bool:
        nonlocal last
        last = orphans(await fleet_says(bus), *libvirt_holds(uri, template))
        return not last

    try:
        await wait_until(agree, timeout, interval=1.0, what="libvirt and the fleet agree")
    except AssertionError:
        return last
    return []


def exactly_once(watch: FleetWatch, since: int = 0) -> list[str]:
    """I3 on the events from `watch.history[since:]`: no create request made two VMs, and no VM was
    failed twice or destroyed twice (a failed VM is then destroyed once its artefacts are gone)."""
    events = watch.history[since:]
    makers: dict[str, set[str]] = {}
    for event in events:
        if event.request_id and event.state in (VmState.REQUESTED, VmState.CLONING, VmState.BOOTING):
            makers.setdefault(event.request_id, set()).add(event.vm)
    problems = [f"request {rid} made {sorted(made)}" for rid, made in makers.items() if len(made) > 1]
    ends = Counter((e.vm, e.state.value) for e in events if e.state in (VmState.DESTROYED, VmState.FAILED))
    problems += [f"{vm} {state} {count} times" for (vm, state), count in ends.items() if count > 1]
    return problems


@dataclass
class Health:
    """I4: the processes' RSS at the start of a scenario, to compare with at its end."""

    stack: Stack
    start: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.start = self.stack.rss_mib()

    def problems(self, restarted: frozenset[str] = frozenset()) -> list[str]:
        """Dead processes and RSS growth at or over the limit (not for processes the scenario restarted)."""
        found = [f"{name} exited with {code}" for name, code in self.stack.exited().items()]
        now = self.stack.rss_mib()
        for name, before in self.start.items():
            grew = now.get(name, before) - before
            if name not in restarted and grew >= RSS_GROWTH_LIMIT_MIB:
                found.append(f"{name} RSS grew {grew:.0f} MiB")
        return found

    def growth(self) -> str:
        """The largest RSS growth, for the row's figures."""
        now = self.stack.rss_mib()
        name, grew = max(((n, now.get(n, b) - b) for n, b in self.start.items()), key=lambda item: item[1])
        return f"max RSS +{grew:.0f} MiB ({name})"


MEMBERSHIP_EVENTS = ("vm.event_handled", "drain.started", "backend.identity_verified", "backend.identity_mismatch")
"""What the balancer logs about its backends: the context of a request it answered with a 5xx itself."""


def balancer_answers(stack: Stack, window_s: float = 1.0) -> list[str]:
    """I2's evidence: every 5xx the balancer logged (its own 503 has `vm` None), each with the membership
    changes it saw within `window_s` before, so a failed run names the window it fell into."""
    changes = [r for event in MEMBERSHIP_EVENTS for r in log_lines(stack, "balancer", event)]
    found = []
    for answer in log_lines(stack, "balancer", "access"):
        if int(answer.get("status", 0)) < 500:
            continue
        at = _seconds(answer, "time")  # when the request came (the line is written later)
        before = sorted((r for r in changes if 0 <= at - _seconds(r) <= window_s), key=_seconds)
        context = "; ".join(f"-{at - _seconds(r):.3f}s {r['event']} {r.get('vm')} {r.get('state') or ''}".rstrip()
                            for r in before)
        found.append(f"{answer.get('status')} vm={answer.get('vm')} at {answer.get('time')} after: {context}")
    return found


def _seconds(record: dict[str, object], key: str = "timestamp") -> float:
    stamp = str(record.get(key) or record.get("timestamp", ""))
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else 0.0


def verdict(problems: list[str]) -> str:
    return "pass" if not problems else "fail"


async def check_all(watch: FleetWatch, uri: str, template: str, result: dict[str, object], health: Health,
                    since: int, restarted: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """I1-I4 after a scenario: `result` is the load client's final counts, `since` where the
    scenario's events begin in `watch.history`, `restarted` the processes it killed on purpose."""
    failed = result.get("failed")
    said = f"; the balancer answered {balancer_answers(health.stack)}" if failed else ""
    return {"I1": await no_orphans(watch.bus, uri, template),
            "I2": [f"{failed} failed: {result.get('failures')}{said}"] if failed else [],
            "I3": exactly_once(watch, since), "I4": health.problems(restarted)}


def verdicts(found: dict[str, list[str]]) -> dict[str, str]:
    return {name: verdict(problems) for name, problems in found.items()}
