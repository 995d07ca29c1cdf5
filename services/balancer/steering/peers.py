"""The processes sharing one UDP port on this host, and the local sockets that carry datagrams between them.

Each process binds a unix datagram socket `<port>.<node>.<slot>` in a private directory: mode
0700 and owned by the balancer's user, so only processes of that user (and root) can bind a slot
there or send to one. Another local user can neither squat the slots (and stop the balancer
starting) nor inject datagrams; the abstract names used before had no permissions at all. No
per-datagram credential check is needed: the directory is the check, made once when it is opened.

Binding is the claim, made under an flock on `.lock` so siblings starting together never take one
slot twice. A process removes its socket file when it closes; a killed one leaves the file
behind, and the next claim (of any port) removes it once nobody answers on it (a connect is
refused), so a stale file neither blocks a restart nor piles up. The live
set is read from /proc/net/unix, which lists the sockets bound now, never a dead one's file.
Replicas in containers share a slot directory through a volume mounted at the same path.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import stat
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import structlog

from services.balancer.process.sockets import grow_buffers

log = structlog.get_logger("balancer.steering")

FORWARD, BROADCAST = 1, 2
"""What a sibling sent: a datagram to handle, or a copy to handle only if it holds the connection."""
_V4, _V6 = 4, 6
PROC_NET_UNIX = Path("/proc/net/unix")
RUN_DIR = Path("/run/quicfleet/steering")
"""Root's slot directory (what the compose replicas share as a volume)."""
LOCK = ".lock"
_MAX_PATH = 107
"""A unix socket path's longest length (sun_path holds 108 bytes with the NUL)."""
_LONGEST_NAME = "65535.255.255"


def name_of(port: int, node: int, slot: int) -> str:
    return f"{port}.{node}.{slot}"


def default_directory(state_dir: Path = Path(".run/balancer")) -> Path:
    """The slot directory unless one is configured: /run/quicfleet/steering as root, the user's runtime
    directory otherwise, and the balancer's state directory when there is none."""
    if os.geteuid() == 0:
        return RUN_DIR
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) / "quicfleet" / "steering" if runtime else state_dir / "steering"


def private_directory(path: Path) -> Path:
    """The slot directory, made or checked (mode 0700, this user's); its absolute path.

    A directory of another user is refused (it could hold anyone's sockets); one of ours that others
    could enter is closed and swept of what they may have put in it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path = path.parent.resolve() / path.name
    if len(os.fsencode(path / _LONGEST_NAME)) > _MAX_PATH:
        raise ValueError(f"steering directory {path} is too long for a unix socket path ({_MAX_PATH} bytes)")
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid():
            raise PermissionError(f"steering directory {path} belongs to uid {info.st_uid}, not {os.geteuid()}")
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
            _sweep(path)
    finally:
        os.close(fd)
    return path


def _sweep(directory: Path) -> None:
    """Remove what another user left in a directory that was open to them."""
    for entry in directory.iterdir():
        if entry.lstat().st_uid != os.geteuid():
            log.warning("steering.foreign_entry_removed", path=str(entry))
            entry.unlink()


def claim(directory: Path, port: int, node: int, slots: range = range(1, 256)) -> tuple[socket.socket, int]:
    """Bind the first free slot's socket for this port and node in `directory`; returns it and the slot."""
    with _claim_lock(directory):
        _reap(directory)
        for slot in slots:
            sock = _bind(directory / name_of(port, node, slot))
            if sock is not None:
                grow_buffers(sock, 4 * 1024 * 1024)
                sock.setblocking(False)
                return sock, slot
    raise RuntimeError(f"every steering slot of port {port} node {node} is taken")


@contextlib.contextmanager
def _claim_lock(directory: Path) -> Iterator[None]:
    """Held while a process looks for a free slot and binds it: the look and the bind are then one step."""
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _reap(directory: Path) -> None:
    """Remove the socket files of killed processes, of every port: a port seen once may never come back."""
    for entry in directory.iterdir():
        if stat.S_ISSOCK(entry.lstat().st_mode) and not _held(entry):
            release(entry)


def _bind(path: Path) -> socket.socket | None:
    """A socket bound at `path`, reclaiming a dead owner's file; None when a live sibling holds the slot."""
    if _held(path):
        return None
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)  # siblings of this user can send, whatever the umask
    except OSError:
        sock.close()
        raise
    return sock


def _held(path: Path) -> bool:
    """Whether a live process of this user answers at `path` (a dead owner's socket file refuses a connect)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.geteuid():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            log.info("steering.stale_slot_reclaimed", path=str(path))
            return False
    return True


def release(path: Path) -> None:
    """Remove a slot's socket file as its owner leaves (a killed owner's is reclaimed by the next claim)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def live_slots(directory: Path, port: int, node: int, table: Callable[[], str] = PROC_NET_UNIX.read_text) -> set[int]:
    """Slots bound right now for this port and node (every process's, this one's included)."""
    stem = str(directory / name_of(port, node, 0))[:-1]
    found: set[int] = set()
    for line in table().splitlines():
        fields = line.split(None, 7)  # Num RefCount Protocol Flags Type St Inode Path (a path may hold spaces)
        path = fields[7] if len(fields) == 8 else ""
        if path.startswith(stem) and path[len(stem):].isdigit():
            found.add(int(path[len(stem):]))
    return found


def encode(kind: int, addr: Any, datagram: bytes) -> bytes:
    """A datagram with the client address it came from, for a sibling."""
    host = addr[0]
    if ":" not in host:
        return struct.pack("!BBH", kind, _V4, addr[1]) + socket.inet_pton(socket.AF_INET, host) + datagram
    flow, scope = (addr[2], addr[3]) if len(addr) >= 4 else (0, 0)
    packed = socket.inet_pton(socket.AF_INET6, host)
    return struct.pack("!BBHII", kind, _V6, addr[1], flow, scope) + packed + datagram


def decode(message: bytes) -> tuple[int, Any, bytes] | None:
    """(kind, client address, datagram) of a sibling's message, or None when it is malformed."""
    if len(message) < 8:
        return None
    kind, version, port = struct.unpack_from("!BBH", message)
    if version == _V4:
        return kind, (socket.inet_ntop(socket.AF_INET, message[4:8]), port), message[8:]
    if version == _V6 and len(message) >= 28:
        flow, scope = struct.unpack_from("!II", message, 4)
        return kind, (socket.inet_ntop(socket.AF_INET6, message[12:28]), port, flow, scope), message[28:]
    return None
