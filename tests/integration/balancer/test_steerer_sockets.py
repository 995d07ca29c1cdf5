"""Two steerers on real abstract unix sockets: a draining process sends new connections to a live sibling."""

from __future__ import annotations

import asyncio
from typing import Any

from services.balancer.steering.cid import Layout
from services.balancer.steering.plan import rendezvous
from services.balancer.steering.steerer import Steerer

GONE = 250
"""A slot nobody holds on the test's port."""


def _initial(dcid: bytes) -> bytes:
    """A long-header datagram (an Initial's first bytes) for a connection ID nobody holds: a new connection."""
    return bytes((0xC0, 0, 0, 0, 1, len(dcid))) + dcid + b"\x00" * 1200


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
        initial = _initial(dcid)
        assert here.route(initial, ("127.0.0.1", 4242)) is True
        data, addr = await asyncio.wait_for(got.get(), 5)
        assert data == initial and addr == ("127.0.0.1", 4242)
        assert GONE not in here.live
    finally:
        here.close()
        sibling.close()


async def test_a_process_that_starts_draining_learns_of_a_sibling_that_joined_since_its_last_read() -> None:
    """A replacement that binds its slot between two periodic reads (a rolling restart's SIGTERM comes at once)
    still gets the draining process's new connections instead of their being refused there."""
    got: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
    here = Steerer(Layout(), 3, lambda _d, _a: None, lambda _c: False)
    sibling = Steerer(Layout(), 3, lambda d, a: got.put_nowait((d, a)), lambda _c: False)
    try:
        here.live = {here.slot}  # as read before the sibling bound its slot
        here.drain()
        assert sibling.slot in here.live
        initial = _initial(b"\x07" * 8)
        assert here.route(initial, ("127.0.0.1", 4243)) is True
        data, _ = await asyncio.wait_for(got.get(), 5)
        assert data == initial
    finally:
        here.close()
        sibling.close()


async def test_a_draining_process_alone_looks_again_for_a_sibling_before_it_keeps_a_new_connection() -> None:
    """Draining with no sibling known, a new connection makes the process re-read the live slots (at most every
    `REREAD_S`), so a sibling that joined after the drain began gets it."""
    got: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
    here = Steerer(Layout(), 4, lambda _d, _a: None, lambda _c: False)
    here.drain()
    sibling = Steerer(Layout(), 4, lambda d, a: got.put_nowait((d, a)), lambda _c: False)
    try:
        here._read_at -= 1.0  # the last read is older than REREAD_S
        initial = _initial(b"\x09" * 8)
        assert here.route(initial, ("127.0.0.1", 4244)) is True
        data, _ = await asyncio.wait_for(got.get(), 5)
        assert data == initial
    finally:
        here.close()
        sibling.close()
