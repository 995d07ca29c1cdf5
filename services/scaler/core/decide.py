"""The scaler's pure core: `decide(state, load, now) -> Decision(commands, reason, state)`.

One call per evaluation: the autoscaler picks the desired size from the load, then the
reconciler turns "desired vs what exists" into creates, drains and destroys; its note joins
the reason whenever the fleet is not at its size (so "why no create?" has an answer too).
No I/O, no clock: the leader's loop, the unit tests and the replay benchmark all drive the
same function.
"""

from __future__ import annotations

from dataclasses import replace

from services.scaler.core.ahead import lead_for
from services.scaler.core.autoscale import autoscale
from services.scaler.core.model import Decision, FleetState, LoadView, without_pool
from services.scaler.core.predict import LEAD_SHARE, combine, learn
from services.scaler.core.reconcile import MATCHED, reconcile


def decide(state: FleetState, load: LoadView | None, now: float) -> Decision:
    """Choose the desired size and the commands that move the fleet towards it."""
    state = learn(state, load, now)
    ahead = lead_for(state)  # the lead sees the pool
    outcome = autoscale(without_pool(state), load, now, ahead)
    outcome, foreseen = combine(state, outcome, now, ahead if ahead.seconds else lead_for(state, LEAD_SHARE))
    sized = replace(state, desired=outcome.desired, memory=outcome.memory, forecast=foreseen)
    if not state.desired_known and outcome.desired == state.desired:
        reason = f"{outcome.reason}; no desired size stored yet: the fleet is left as it is"
        return Decision(
            commands=(), reason=reason, state=sized, previous_desired=state.desired, signals=outcome.signals
        )
    commands, reconciled, note = reconcile(sized, now)
    reason = outcome.reason if note == MATCHED else f"{outcome.reason}; {note}"
    return Decision(
        commands=commands, reason=reason, state=reconciled, previous_desired=state.desired, signals=outcome.signals
    )
