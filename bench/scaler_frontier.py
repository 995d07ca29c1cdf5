"""The replay's trade-off, mapped: policy variants of `decide()` against the HPA on the same traces.

The replay target is four figures at once (no flaps, at most half the HPA's actions, at most
half its requests above capacity, no more VM-hours). This bench moves the policy knobs that
trade them against each other (how big a scale-in must be, how long a scale-up must persist,
how far above the recommendation a scale-up lands, how long a level is averaged, how big the
warm pool is) and prints, per trace, each variant's ratios to the HPA and whether all four hold,
so the claim "no setting meets them together" can be checked. Two what-if variants are not
policies but the one causal way to never flap: no scale-out for the flap window after a
scale-in (`DecideController.hold_out_after_in_s`), to show what that costs in requests.

    .venv/bin/python -m bench scaler_frontier
"""

from __future__ import annotations

import math
import os
from multiprocessing import Pool
from typing import Any

from bench._traces import SHORT, TRACES
from bench.scaler_replay import AFTER, MODEL, POLICY, SEEDS, TARGET_RPS, HpaController, total
from bench.simulate import DecideController, Tally, replay

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "scale-in steps >= 10%": {"scale_down_tolerance": 0.1},
    "scale-in steps >= 20%": {"scale_down_tolerance": 0.2},
    "scale-in steps >= 40%": {"scale_down_tolerance": 0.4},
    "level over 5 s": {"scale_down_settle_s": 5},
    "up held 5 s": {"scale_up_stabilization_s": 5},
    "up held 15 s": {"scale_up_stabilization_s": 15},
    "up headroom 10%": {"scale_up_headroom": 0.1},
    "up headroom 20%, in >= 20%": {"scale_up_headroom": 0.2, "scale_down_tolerance": 0.2},
    "pool 1 per host + boot lead": {k: AFTER.model_dump()[k] for k in ("pool_size", "boot_lead_percentile")},
    "pool 4 per host": {"pool_size": 4},
    "no out 300 s after in": {"hold_out_after_in_s": 300.0},
    "no out after in, pool 4": {"hold_out_after_in_s": 300.0, "pool_size": 4},
}
WHAT_IF = "hold_out_after_in_s"
"""A variant key that is not a policy field: the simulator undoes scale-outs decided this long after a scale-in."""


def _one(job: tuple[str, str, int]) -> tuple[str, str, Tally]:
    """One trace and seed through one variant ("hpa" for the HPA model)."""
    variant, trace_name, seed = job
    trace = TRACES[trace_name](4 * 3600, seed)
    start = math.ceil(trace[0] / TARGET_RPS)
    if variant == "hpa":
        return variant, trace_name, replay(trace, HpaController(POLICY.min_replicas, POLICY.max_replicas), MODEL, start)
    update = dict(VARIANTS[variant])
    hold = float(update.pop(WHAT_IF, 0.0))
    controller = DecideController(POLICY.model_copy(update=update), start, MODEL.hosts, hold_out_after_in_s=hold)
    return variant, trace_name, replay(trace, controller, MODEL, start)


def _ratios(ours: Tally, hpa: Tally) -> tuple[float, float, float]:
    """Actions, requests above capacity and VM-hours, ours / HPA."""
    return (ours.actions / max(hpa.actions, 1), ours.requests_over / max(hpa.requests_over, 1e-9),
            ours.vm_hours / hpa.vm_hours)


def main() -> None:
    """Replay every variant and print ratios, and per trace whether any variant meets the target."""
    jobs = [(v, n, s) for v in ("hpa", *VARIANTS) for n in SHORT for s in SEEDS]
    with Pool(os.cpu_count() or 1) as pool:
        results = pool.map(_one, jobs)
    sums = {(v, n): total([t for vv, nn, t in results if (vv, nn) == (v, n)]) for v, n, _ in jobs}
    print(f"ours / HPA over seeds {SEEDS}; target: flaps 0, actions <= 0.5, req-over <= 0.5, VM-h <= 1.0")
    for name in SHORT:
        hpa, met = sums[("hpa", name)], []
        print(f"{name} (HPA: {hpa.actions} actions, {hpa.flaps} flaps):")
        for variant in VARIANTS:
            ours = sums[(variant, name)]
            actions, over, hours = _ratios(ours, hpa)
            ok = ours.flaps == 0 and actions <= 0.5 and over <= 0.5 and hours <= 1.0
            met += [variant] if ok else []
            print(f"  {variant:<27} actions {actions:4.2f}  flaps {ours.flaps:3d}  req-over {over:5.2f}  "
                  f"VM-h {hours:4.2f}{'  MEETS' if ok else ''}")
        print(f"  -> {'met by: ' + ', '.join(met) if met else 'no variant meets all four'}")


if __name__ == "__main__":
    main()
