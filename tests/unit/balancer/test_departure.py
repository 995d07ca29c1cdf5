"""A connection going away: streams past the GOAWAY line are refused, and it closes only once idle."""

from __future__ import annotations

import asyncio

from services.balancer.quic.departure import Departure


async def test_streams_at_or_past_the_line_are_refused() -> None:
    """The GOAWAY id is the first refused stream; lower ids are still served."""
    departure = Departure(asyncio.get_running_loop(), 8, lambda: False, lambda: None)
    assert not departure.refuses(4)
    assert departure.refuses(8) and departure.refuses(12)


async def test_closes_after_the_linger_once_idle_and_never_while_busy() -> None:
    """A busy connection is not closed; once idle it closes after the linger, exactly once."""
    busy = [True]
    closed = asyncio.Event()
    closes: list[None] = []

    def close() -> None:
        closes.append(None)
        closed.set()

    departure = Departure(asyncio.get_running_loop(), 0, lambda: busy[0], close)
    departure.idle()
    assert departure._timer is None, "nothing is scheduled while requests are in flight"
    busy[0] = False
    departure.idle()
    departure.idle()
    await asyncio.wait_for(closed.wait(), 5)
    assert closes == [None]
