"""The processes sharing one UDP port on this host, and the local sockets that carry datagrams between them.

Each process binds a Linux abstract-namespace datagram socket named after the port, its node and
its slot. Binding is the claim (a taken name fails with EADDRINUSE) and the kernel drops the
name when the process dies, so a slot is never held by a dead process and needs no cleanup. The
abstract namespace belongs to the network namespace: replicas in containers with host networking
see each other; the live set is read from /proc/net/unix, which lists exactly those names.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.balancer.process.sockets import grow_buffers

PREFIX = "quicfleet-steer"
FORWARD, BROADCAST = 1, 2
"""What a sibling sent: a datagram to handle, or a copy to handle only if it holds the connection."""
_V4, _V6 = 4, 6
PROC_NET_UNIX = Path("/proc/net/unix")


def name_of(port: int, node: int, slot: int) -> str:
    return f"{PREFIX}/{port}/{node}/{slot}"


def claim(port: int, node: int, slots: range = range(1, 256)) -> tuple[socket.socket, int]:
    """Bind the first free slot's socket for this port and node; returns it and the slot."""
    for slot in slots:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind("\0" + name_of(port, node, slot))
        except OSError:
            sock.close()
            continue
        grow_buffers(sock, 4 * 1024 * 1024)
        sock.setblocking(False)
        return sock, slot
    raise RuntimeError(f"every steering slot of port {port} node {node} is taken")


def live_slots(port: int, node: int, table: Callable[[], str] = PROC_NET_UNIX.read_text) -> set[int]:
    """Slots bound right now for this port and node (every process's, this one's included)."""
    stem = "@" + name_of(port, node, 0)[:-1]
    found: set[int] = set()
    for line in table().splitlines():
        path = line.rsplit(" ", 1)[-1]
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
