"""`fleet.scaler.forecast`: the scaler's load forecast, what it would do with it, and how well it has done."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from shared.contract.base import Event, EventPart, Name, Reason, utcnow

Load = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class ForecastPoint(EventPart):
    """One step of the forecast: the point and upper values, and the load at that time on the earlier days."""

    at: datetime
    point: Load
    upper: Load
    earlier: Annotated[list[Load | None], Field(max_length=14)] = Field(
        default=[], description="The load at this time of day 1, 2, ... days before (None: not seen)."
    )


class ForecastMade(Event):
    """The leader's forecast, once a minute: in every mode but `off`, and whether or not it acted on it."""

    at: datetime = Field(default_factory=utcnow)
    mode: Annotated[str, Field(max_length=16)]
    signal: Annotated[str, Field(max_length=32)]
    working: bool = Field(description="There is a forecast and it is neither switched off nor held.")
    note: Reason = ""
    error: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        default=None, description="Mean absolute error / mean load of the last day's one-minute-ahead forecasts."
    )
    ahead: Load | None = Field(default=None, description="The upper forecast over the next lead.")
    desired: Annotated[int, Field(ge=0, le=100_000)] = 0
    would: Annotated[int, Field(ge=0, le=100_000)] | None = Field(
        default=None, description="The size the forecast asked for where it differs from the reactive one."
    )
    pool: Annotated[int, Field(ge=0, le=1000)] = Field(default=0, description="Warm pool per host it asks for.")
    history_minutes: Annotated[int, Field(ge=0)] = 0
    leader: Name | None = None
    points: Annotated[list[ForecastPoint], Field(max_length=200)] = []
