"""`quicfleet forecast`: the scaler's next hours against the same times on the last days, as text.

The leader publishes `fleet.scaler.forecast` each minute (in modes `watch` and `on`); this waits
for the next one and prints it: the mode and whether the forecast works (or why not), its error
over the last day, what it would do, then one line per 5 minutes of the next 4 hours: the point
and upper forecast beside the load at that time 1, 2, 3 and 7 days before.
"""

from __future__ import annotations

import asyncio

from nats.aio.msg import Msg

from ops.cli.client import EXIT_UNREACHABLE, CliError
from shared.bus import Bus
from shared.contract.forecast import ForecastMade

WAIT_S = 65.0
"""The leader publishes at least once a minute."""
SHOWN_DAYS = (1, 2, 3, 7)


async def next_forecast(bus: Bus, wait_s: float = WAIT_S) -> ForecastMade:
    """The next forecast the leader publishes (CliError when none comes: forecast off, or no leader)."""
    got: asyncio.Future[ForecastMade] = asyncio.get_running_loop().create_future()

    async def on_forecast(event: ForecastMade, _msg: Msg) -> None:
        if not got.done():
            got.set_result(event)

    sub = await bus.subscribe(bus.subjects.scaler_forecast, ForecastMade, on_forecast)
    try:
        return await asyncio.wait_for(got, wait_s)
    except TimeoutError:
        raise CliError(f"no forecast within {wait_s:g} s: is a scaler leading, and forecast_mode not off?",
                       EXIT_UNREACHABLE) from None
    finally:
        await sub.unsubscribe()


def lines(event: ForecastMade) -> list[str]:
    """The forecast as text, one line per shown time."""
    state = "working" if event.working else "not acting"
    error = "-" if event.error is None else f"{event.error:.0%}"
    head = [f"forecast mode {event.mode} ({state}); signal {event.signal}; error over the last day {error}; "
            f"{event.history_minutes / 60:.0f} h of history",
            f"desired {event.desired}" + (f"; the forecast would make it {event.would}" if event.would else "")
            + (f"; warm pool per host {event.pool}" if event.pool else "")]
    if event.note:
        head.append(event.note)
    cols = "".join(f"{f'-{d}d':>9}" for d in SHOWN_DAYS)
    rows = [f"{'time':>5}  {'point':>9}  {'upper':>9} {cols}"]
    for p in event.points:
        earlier = "".join(f"{_fmt(p.earlier[d - 1] if d <= len(p.earlier) else None):>9}" for d in SHOWN_DAYS)
        rows.append(f"{p.at:%H:%M}  {p.point:9.4g}  {p.upper:9.4g} {earlier}")
    return head + (rows if event.points else ["no forecast points (no earlier day at these times yet)"])


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
