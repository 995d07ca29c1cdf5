"""Socket options the balancer sets on its UDP sockets."""

from __future__ import annotations

import socket


def grow_buffers(sock: socket.socket, size: int) -> None:
    """Bigger kernel buffers: a burst that arrives while the process is busy is queued, not dropped.

    QUIC treats a dropped datagram as congestion, so on a busy host the default 208 KiB receive
    buffer costs throughput through loss recovery. The kernel caps the size at net.core.rmem_max.
    """
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
        except OSError:
            continue
