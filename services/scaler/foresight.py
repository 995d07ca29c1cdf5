"""The forecast's glue: the minute history in its own KV key, and `fleet.scaler.forecast` once a minute.

The history is kept apart from the `desired` key: it is up to 14 days of minutes (about 110 kB
encoded), while `desired` is written on every command and announced on `fleet.scaler.state`. The
leader writes it every `SAVE_EVERY_S` and when it stops; a new leader merges it with what it
witnessed as a follower (`history.merged`), so a failover loses at most those minutes, and none
that a follower saw. Values are stored as 16-bit steps of the history's largest value (a
resolution of 1/65534 of the peak), 0xFFFF for a minute nobody saw.
"""

from __future__ import annotations

import base64
import json
import math
from array import array
from datetime import UTC, datetime

import structlog
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from services.scaler.core.forecast import BASE_DAYS, error, predict
from services.scaler.core.history import DAY_MINUTES, MINUTE_S, LoadHistory, Slot, minute_of
from services.scaler.core.model import FleetState
from shared.bus import Bus
from shared.contract.forecast import ForecastMade, ForecastPoint

log = structlog.get_logger("services.scaler.foresight")

HISTORY_KEY = "history"
SAVE_EVERY_S = 300.0
MISSING = 0xFFFF
SHOWN_MINUTES = 4 * 60
SHOWN_STEP = 5
"""`fleet.scaler.forecast` carries the next 4 hours in 5-minute steps (what `quicfleet forecast` shows)."""


def encode(history: LoadHistory) -> bytes:
    """The history as a compact JSON record (its open minute is left out: it is not closed yet)."""
    top = max((v for v in (*history.means, *history.peaks) if v is not None), default=0.0)
    scale = top / (MISSING - 1) if top > 0 else 1.0
    record = {"v": 1, "signal": history.signal, "first": history.first, "scale": scale,
              "means": _pack(history.means, scale), "peaks": _pack(history.peaks, scale)}
    return json.dumps(record).encode()


def decode(data: bytes) -> LoadHistory:
    """The history a record holds (ValueError/KeyError on a corrupt one)."""
    record = json.loads(data)
    scale = float(record["scale"])
    means, peaks = _unpack(record["means"], scale), _unpack(record["peaks"], scale)
    if len(means) != len(peaks):
        raise ValueError("means and peaks differ in length")
    return LoadHistory(signal=str(record["signal"]), first=int(record["first"]), means=means, peaks=peaks)


def _pack(values: tuple[Slot, ...], scale: float) -> str:
    steps = array("H", (MISSING if v is None else min(MISSING - 1, round(v / scale)) for v in values))
    return base64.b64encode(steps.tobytes()).decode()


def _unpack(text: str, scale: float) -> tuple[Slot, ...]:
    steps = array("H")
    steps.frombytes(base64.b64decode(text))
    return tuple(None if s == MISSING else s * scale for s in steps)


async def load_history(kv: KeyValue) -> LoadHistory:
    """The persisted history (empty when there is none or it cannot be read, which is logged)."""
    try:
        entry = await kv.get(HISTORY_KEY)
        return decode(entry.value or b"")
    except KeyNotFoundError:
        return LoadHistory()
    except (ValueError, KeyError, TypeError) as error:
        log.error("forecast.history_unreadable", error=str(error))
        return LoadHistory()


async def save_history(kv: KeyValue, history: LoadHistory) -> None:
    """Store the history (last writer wins: only the leader writes it, and it only grows)."""
    await kv.put(HISTORY_KEY, encode(history))


def made(fleet: FleetState, leader: str, now: float) -> ForecastMade:
    """The forecast event: what the decision's forecast says, and the next hours against the earlier days."""
    memory, policy, history = fleet.forecast, fleet.policy, fleet.history
    points = predict(history, minute_of(now), SHOWN_MINUTES, policy.forecast_quantile, memory.scores)
    shown = [ForecastPoint(at=_at(p.minute), point=_finite(p.point), upper=_finite(p.upper),
                           earlier=[history.mean(p.minute - d * DAY_MINUTES) for d in range(1, BASE_DAYS + 1)])
             for p in points if p.minute % SHOWN_STEP == 0]
    ahead = max((p.upper for p in memory.curve), default=None)

    err = error(memory.scores)
    return ForecastMade(
        mode=policy.forecast_mode.value, signal=policy.signal.value, note=memory.note[:500],
        working=bool(memory.curve) and not memory.off and not memory.missing, error=err,
        ahead=None if ahead is None else _finite(ahead), desired=fleet.desired, would=memory.would,
        pool=memory.pool, history_minutes=history.seen_minutes(), leader=leader, points=shown,
    )


def _at(minute: int) -> datetime:
    return datetime.fromtimestamp(minute * MINUTE_S, UTC)


def _finite(value: float) -> float:
    return value if math.isfinite(value) and value >= 0 else 0.0


class Foresight:
    """The leader's forecast duties: publish once a minute, save the history every few minutes."""

    def __init__(self, kv: KeyValue, bus: Bus) -> None:
        self.kv, self.bus = kv, bus
        self.published: tuple[object, ...] = ()
        self.saved_at = float("-inf")

    async def after(self, fleet: FleetState, leader: str, now: float) -> None:
        """After an evaluation: the forecast each minute and when what it would do changes (not in mode `off`),
        the history when due."""
        memory = fleet.forecast
        said = (minute_of(now), memory.would, memory.pool, memory.note, bool(memory.curve))
        if said != self.published and fleet.policy.forecast_mode.value != "off":
            self.published = said
            await self.bus.publish(self.bus.subjects.scaler_forecast, made(fleet, leader, now))
        if now - self.saved_at >= SAVE_EVERY_S and fleet.history.means:
            self.saved_at = now
            await save_history(self.kv, fleet.history)
