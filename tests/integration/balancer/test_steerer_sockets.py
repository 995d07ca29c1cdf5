"""Steerers on real unix sockets in their private directory: a draining process sends new connections to a
live sibling; another user can neither squat a slot nor inject a datagram; a dead process's slot is reclaimed."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.balancer.steering import peers
from services.balancer.steering.cid import Layout
from services.balancer.steering.plan import rendezvous
from services.balancer.steering.steerer import Steerer
from tests.support.as_user import as_user

GONE = 250
"""A slot nobody holds on the test's port."""
PORT = 2


@pytest.fixture
def meet() -> Iterator[Path]:
    """A slot directory of this test alone, short enough for a socket path, in a parent anyone may enter
    (so that only the directory's own mode keeps another user out)."""
    parent = Path(tempfile.mkdtemp(prefix="qf-"))
    parent.chmod(0o755)
    yield parent / "steer"
    shutil.rmtree(parent)


def _steerer(meet: Path, port: int = PORT, handle: Any = None) -> Steerer:
    return Steerer(Layout(directory=meet), port, handle or (lambda _d, _a: None), lambda _c: False)


def _initial(dcid: bytes) -> bytes:
    """A long-header datagram (an Initial's first bytes) for a connection ID nobody holds: a new connection."""
    return bytes((0xC0, 0, 0, 0, 1, len(dcid))) + dcid + b"\x00" * 1200


async def test_a_draining_process_reroutes_a_new_connection_when_its_pick_is_gone(meet: Path) -> None:
    """While draining, an Initial whose rendezvous pick is a vanished slot goes to a live sibling instead of
    being refused here."""
    got: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
    here = _steerer(meet)
    sibling = _steerer(meet, handle=lambda d, a: got.put_nowait((d, a)))
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


async def test_a_process_that_starts_draining_learns_of_a_sibling_that_joined_since_its_last_read(meet: Path) -> None:
    """A replacement that binds its slot between two periodic reads (a rolling restart's SIGTERM comes at once)
    still gets the draining process's new connections instead of their being refused there."""
    got: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
    here = _steerer(meet, 3)
    sibling = _steerer(meet, 3, lambda d, a: got.put_nowait((d, a)))
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


async def test_a_draining_process_alone_looks_again_for_a_sibling_before_it_keeps_a_new_connection(
    meet: Path,
) -> None:
    """Draining with no sibling known, a new connection makes the process re-read the live slots (at most every
    `REREAD_S`), so a sibling that joined after the drain began gets it."""
    got: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
    here = _steerer(meet, 4)
    here.drain()
    sibling = _steerer(meet, 4, lambda d, a: got.put_nowait((d, a)))
    try:
        here._read_at -= 1.0  # the last read is older than REREAD_S
        initial = _initial(b"\x09" * 8)
        assert here.route(initial, ("127.0.0.1", 4244)) is True
        data, _ = await asyncio.wait_for(got.get(), 5)
        assert data == initial
    finally:
        here.close()
        sibling.close()


def _bind_at(path: Path, keep: list[socket.socket]) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    keep.append(sock)
    sock.bind(str(path))


def _send_to(path: Path, message: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message, str(path))


async def test_the_slot_directory_is_private_to_the_balancers_user(meet: Path) -> None:
    """The steerer makes its directory mode 0700 and its own, and its socket sits there under its slot."""
    here = _steerer(meet)
    try:
        info = meet.lstat()
        assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.geteuid()
        assert here.path == meet / peers.name_of(PORT, 0, here.slot) and stat.S_ISSOCK(here.path.lstat().st_mode)
    finally:
        here.close()
    assert not here.path.exists(), "a steerer that leaves removes its socket file"


async def test_another_user_cannot_squat_a_slot(meet: Path) -> None:
    """A process of another user cannot bind a slot's socket (the directory shuts it out), so the balancer
    still gets slot 1; with the directory opened up the same bind would succeed."""
    peers.private_directory(meet)
    keep: list[socket.socket] = []
    with as_user(lambda: _bind_at(meet / peers.name_of(PORT, 0, 1), keep)) as outcome:
        assert outcome == "EACCES"
        here = _steerer(meet)
        assert here.slot == 1
        here.close()
    meet.chmod(0o777)
    with as_user(lambda: _bind_at(meet / peers.name_of(PORT, 0, 1), keep)) as outcome:
        assert outcome == "ok", "the control: only the directory's mode refused the squatter"


async def test_a_squatter_in_a_directory_left_open_is_swept_out(meet: Path) -> None:
    """A slot directory of ours that was left open is closed again and what another user bound in it is
    removed, so the balancer takes slot 1 and siblings' datagrams reach it, not the squatter."""
    meet.mkdir(mode=0o700)
    meet.chmod(0o777)
    keep: list[socket.socket] = []
    squat = meet / peers.name_of(PORT, 0, 1)
    with as_user(lambda: _bind_at(squat, keep)) as outcome:
        assert outcome == "ok" and squat.lstat().st_uid != os.geteuid()
        got: asyncio.Queue[bytes] = asyncio.Queue()
        here = _steerer(meet, handle=lambda d, _a: got.put_nowait(d))
        try:
            assert here.slot == 1 and stat.S_IMODE(meet.lstat().st_mode) == 0o700
            _send_to(here.path, peers.encode(peers.FORWARD, ("127.0.0.1", 9), b"x" * 40))
            assert await asyncio.wait_for(got.get(), 5) == b"x" * 40
        finally:
            here.close()


async def test_another_user_cannot_inject_a_datagram(meet: Path) -> None:
    """A datagram another user sends to a slot is refused by the kernel and never reaches the engine; the
    same datagram from the balancer's user does."""
    got: asyncio.Queue[bytes] = asyncio.Queue()
    here = _steerer(meet, handle=lambda d, _a: got.put_nowait(d))
    try:
        forged = peers.encode(peers.FORWARD, ("192.0.2.1", 443), b"forged" * 10)
        with as_user(lambda: _send_to(here.path, forged)) as outcome:
            assert outcome == "EACCES"
        _send_to(here.path, peers.encode(peers.FORWARD, ("127.0.0.1", 9), b"sibling" * 10))
        assert await asyncio.wait_for(got.get(), 5) == b"sibling" * 10
        assert got.empty() and here.counts.received == 1
    finally:
        here.close()


def test_a_slot_directory_of_another_user_is_refused(meet: Path) -> None:
    """A directory another user made first (or owns) is not joined: its owner could read every datagram."""
    meet.mkdir(mode=0o700)
    os.chown(meet, 65534, 65534)
    with pytest.raises(PermissionError, match="belongs to uid 65534"):
        peers.private_directory(meet)


async def test_a_dead_processs_socket_file_does_not_block_a_restart(meet: Path) -> None:
    """A socket file left by a killed process (bound, never removed) is not live, and the next claim
    reclaims its slot instead of skipping it; dead files of other ports go too, live ones stay."""
    peers.private_directory(meet)
    stale, elsewhere = meet / peers.name_of(PORT, 0, 1), meet / peers.name_of(PORT + 1, 0, 7)
    for path in (stale, elsewhere):
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        dead.bind(str(path))
        dead.close()  # the kernel's view of a SIGKILLed owner: the file stays, nobody answers on it
    assert stale.exists() and 1 not in peers.live_slots(meet, PORT, 0)
    sibling = _steerer(meet, PORT + 1)
    here = _steerer(meet)
    try:
        assert here.slot == 1 and here.live == {1}
        assert not elsewhere.exists() and sibling.path.exists()
    finally:
        here.close()
        sibling.close()
