"""Two steerers on real abstract unix sockets: forwarding to a slot that just vanished picks another sibling."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.balancer.steering.cid import Layout
from services.balancer.steering.plan import rendezvous
from services.balancer.steering.steerer import Steerer

pytestmark = pytest.mark.integration

GONE = 250
"""A slot nobody holds on the test's port."""


async def test_a_draining_process_reroutes_a_new_connection_when_its_pick_is_gone() -> None:
    """While draining, an Initial whose rendezvous pick is a vanished slot goes to a live sibling instead of
    being refused here."""
    got: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
    here = Steerer(Layout(), 2, lambda _d, _a: None, lambda _c: False)
    sibling = Steerer(Layout(), 2, lambda d, a: got.put_nowait((d, a)), lambda _c: False)
    try:
        here.draining = True
        here.live = {here.slot, sibling.slot, GONE}
        dcid = next(k for k in (bytes((i,)) * 8 for i in range(256))
                    if rendezvous(k, {sibling.slot, GONE}) == GONE)
        initial = bytes((0xC0, 0, 0, 0, 1, len(dcid))) + dcid + b"\x00" * 1200
        assert here.route(initial, ("127.0.0.1", 4242)) is True
        data, addr = await asyncio.wait_for(got.get(), 5)
        assert data == initial and addr == ("127.0.0.1", 4242)
        assert GONE not in here.live
    finally:
        here.close()
        sibling.close()
