"""The forecast on multi-day traces: history days first, then the scored days, against the HPA and forecast off.

Each trace of `bench/_weeks.py` (ten days from a Monday) is split: the first `HISTORY_DAYS` are
history (given to the scaler as its persisted minute history, the last of them fed through the
forecast's own `learn` so it has a day of scores), the rest are replayed a second at a time on
the fleet model of `bench/scaler_replay.py` and scored. Six controllers, all from the same
fleet: the HPA model, and `decide()` with the default policy (boot lead on) with the forecast
off / on, each without and with the warm pool (pool on: `pool_size` 1; with the forecast also
`pool_max` 4, sized from the forecast's rise), and `on+fpool`: the forecast with a pool it alone
sizes (`pool_size` 0, `pool_max` 4). Printed per trace (summed over the seeds):
figures, ratios to the HPA, the holiday's figures against forecast off, and the forecast's
error (mean absolute error / mean load, one minute ahead, over the scored days).

    .venv/bin/python -m bench forecast_replay      (also run by `bench scaler_replay`)

A reduced run for iterating (all three optional, comma-separated; the holiday lines need `off`):

    FORECAST_REPLAY_TRACES=week FORECAST_REPLAY_SEEDS=7 FORECAST_REPLAY_RUNS=hpa,off,on \
        nice .venv/bin/python -m bench forecast_replay

`FORECAST_REPLAY_DUMP=file` also pickles the raw results (a subset can be reported from them again).
"""

from __future__ import annotations

import math
import os
import pickle
from dataclasses import replace
from functools import lru_cache
from multiprocessing import Pool

from bench._traces import DAY_S
from bench._weeks import HISTORY_DAYS, HOLIDAY, WEEKS
from bench.scaler_replay import MODEL, POLICY, TARGET_RPS, HpaController, ratio, total
from bench.simulate import Controller, DecideController, SimFleet, SimVm, Tally, _measure
from services.scaler.core.forecast import error
from services.scaler.core.history import DAY_MINUTES, LoadHistory, close
from services.scaler.core.model import LoadView
from services.scaler.core.predict import learn
from shared.contract.policy import ForecastMode, ScalingPolicy

SEEDS = (7, 11)
LIVE = POLICY.model_copy(update={"boot_lead_percentile": ScalingPolicy().boot_lead_percentile})
"""The default policy, bench-sized, with the boot lead: today's controller."""
POLICIES: dict[str, ScalingPolicy] = {
    "off": LIVE.model_copy(update={"forecast_mode": ForecastMode.OFF}),
    "on": LIVE.model_copy(update={"forecast_mode": ForecastMode.ON}),
    "off+pool": LIVE.model_copy(update={"forecast_mode": ForecastMode.OFF, "pool_size": 1}),
    "on+pool": LIVE.model_copy(update={"forecast_mode": ForecastMode.ON, "pool_size": 1, "pool_max": 4}),
    "on+fpool": LIVE.model_copy(update={"forecast_mode": ForecastMode.ON, "pool_max": 4}),
}
"""`on+fpool`: a pool only the forecast sizes (`pool_size` 0, up to `pool_max` 4 per host before a rise): the
cheap pool for the rises the forecast sees; `on+pool` keeps a floor of 1 per host as well, for random steps."""
RUNS = ("hpa", *POLICIES)


def _chosen(variable: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated subset from the environment (a reduced run), or `default`."""
    value = os.environ.get(variable, "")
    return tuple(v.strip() for v in value.split(",") if v.strip()) or default


def selection() -> tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...]]:
    """The traces, seeds and runs to replay: all, unless FORECAST_REPLAY_{TRACES,SEEDS,RUNS} narrow them."""
    traces = _chosen("FORECAST_REPLAY_TRACES", tuple(WEEKS))
    seeds = tuple(int(s) for s in _chosen("FORECAST_REPLAY_SEEDS", tuple(str(s) for s in SEEDS)))
    runs = _chosen("FORECAST_REPLAY_RUNS", RUNS)
    return traces, seeds, ("hpa", *(r for r in runs if r != "hpa"))


def history_of(load: list[float], days: int) -> LoadHistory:
    """The minute history of the first `days` days of a per-second trace (means and peaks)."""
    history = LoadHistory(signal="rps")
    for minute in range(days * DAY_MINUTES):
        second = load[minute * 60: minute * 60 + 60]
        history = close(history, minute, sum(second) / len(second), max(second))
    return history


def warmed(controller: DecideController, load: list[float]) -> DecideController:
    """The scaler as it would be after the history days: the minute history, and the last day through `learn`."""
    state = replace(controller.state, history=history_of(load, HISTORY_DAYS - 1))
    start = (HISTORY_DAYS - 1) * DAY_S
    for second in range(start, HISTORY_DAYS * DAY_S):
        seen = load[max(0, second - MODEL.metrics_window_s + 1): second + 1]
        state = learn(state, LoadView(at=float(second), rps=sum(seen) / len(seen)), float(second))
    state = replace(state, forecast=replace(state.forecast, scores=()))  # score the scored days only
    controller.state = state
    return controller


@lru_cache(maxsize=1)
def load_of(name: str, seed: int) -> list[float]:
    """A trace, made once per worker while its jobs are for the same trace and seed (making one takes seconds)."""
    return WEEKS[name](seed)


def run(job: tuple[str, str, int]) -> tuple[str, str, int, list[Tally], float | None]:
    """One trace and seed through one controller: a tally per scored day, and the forecast's error over them."""
    name, seed, kind = job[1], job[2], job[0]
    load = load_of(name, seed)
    start_s = HISTORY_DAYS * DAY_S
    size = math.ceil(load[start_s] / TARGET_RPS)
    controller: Controller
    if kind == "hpa":
        controller = HpaController(POLICY.min_replicas, POLICY.max_replicas)
    else:
        controller = warmed(DecideController(POLICIES[kind], size, MODEL.hosts), load)
    tallies = days(load, start_s, controller, size)
    err = error(controller.state.forecast.scores) if isinstance(controller, DecideController) else None
    return kind, name, seed, tallies, err


def days(load: list[float], start_s: int, controller: Controller, size: int) -> list[Tally]:
    """Replay `load` from `start_s` on, a tally per day (what `simulate.replay` does, at the trace's own clock)."""
    fleet = SimFleet(MODEL, [SimVm(f"vm{i}", start_s - MODEL.boot_s, start_s, f"h{i % MODEL.hosts}")
                             for i in range(size)])
    fleet.serial, tallies = size, []
    for second in range(start_s, len(load)):
        if (second - start_s) % DAY_S == 0:
            tallies.append(Tally())
        tally, now = tallies[-1], float(second)
        seen = load[second - MODEL.metrics_window_s + 1: second + 1]
        before = len(fleet.vms)
        controller.step(now, fleet, sum(seen) / len(seen))
        if len(fleet.vms) != before:
            tally.record_change(now, len(fleet.vms) - before, MODEL.flap_window_s)
        _measure(tally, fleet, load[second], now)
        tally.sizes.clear()
    return tallies


def ratios(ours: Tally, theirs: Tally) -> str:
    return (f"actions {ratio(ours.actions, theirs.actions):>5}  flaps {ours.flaps:2d} vs {theirs.flaps:2d}  "
            f"req-over {ratio(ours.requests_over, theirs.requests_over):>5}  "
            f"VM-h {ratio(ours.vm_hours, theirs.vm_hours):>5}  pool VM-h {ratio(ours.pool_hours, theirs.vm_hours):>5}")


def report(results: list[tuple[str, str, int, list[Tally], float | None]],
           chosen: tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...]] | None = None) -> None:
    """Per trace: the scored days' sums, ratios to the HPA, the holiday against forecast off, and the error."""
    holiday = HOLIDAY - HISTORY_DAYS
    traces, seeds, runs = chosen or (tuple(WEEKS), SEEDS, RUNS)
    for name in traces:
        got = {(k, s): (t, e) for k, n, s, t, e in results if n == name}
        whole = {k: total([day for s in seeds for day in got[(k, s)][0]]) for k in runs}
        off_day = {k: total([got[(k, s)][0][holiday] for s in seeds]) for k in runs}
        print(f"{name}: {len(got[('hpa', seeds[0])][0])} scored days after {HISTORY_DAYS} of history, seeds {seeds}")
        for kind in runs:
            t = whole[kind]
            print(f"  {kind:<8} actions {t.actions:5d}  flaps {t.flaps:3d}  req-over {t.requests_over:10.0f}"
                  f"  VM-h {t.vm_hours:8.2f}  pool VM-h {t.pool_hours:7.2f}")
        print("  ours / HPA (scored days):")
        for kind in runs[1:]:
            print(f"  {kind:<8} {ratios(whole[kind], whole['hpa'])}")
        pairs = [(on, off) for on, off in (("on", "off"), ("on+pool", "off+pool")) if on in runs and off in runs]
        if pairs:
            print("  the holiday (day that breaks the pattern), forecast on / forecast off:")
        for on, off in pairs:
            print(f"  {on:<8} {ratios(off_day[on], off_day[off])}")
        first = next((k for k in runs if k.startswith("on")), "on")
        errs = [e for k, s in got if k == first and (e := got[(k, s)][1]) is not None]
        print("  forecast error (MAE / mean load, 1 min ahead, scored days): "
              + ", ".join(f"{e:.1%}" for e in errs))


def main() -> None:
    chosen = selection()
    traces, seeds, runs = chosen
    jobs = [(kind, name, seed) for name in traces for seed in seeds for kind in runs]
    with Pool(os.cpu_count() or 1) as pool:
        results = pool.map(run, jobs, chunksize=1)
    print(f"fleet: {MODEL.capacity_rps:g} rps per VM, boot {MODEL.boot_s:g} s, resume {MODEL.resume_s:g} s, "
          f"{MODEL.hosts} hosts; target {TARGET_RPS:g} rps per VM")
    report(results, chosen)
    if dump := os.environ.get("FORECAST_REPLAY_DUMP"):  # the raw tallies, to report a subset again without a rerun
        with open(dump, "wb") as out:
            pickle.dump(results, out)


if __name__ == "__main__":
    main()
