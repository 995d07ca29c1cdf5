"""`python -m bench steering`: what connection-ID steering costs per datagram, as a ratio to a request.

Two steerers on one port in one process (the same sockets and code as two balancer processes):
the check on every datagram for a connection held here, and a datagram forwarded to its owner
and received there (the path a packet takes after a client's address changed or a process
joined or left). The end-to-end cost (h2load, steering on against off in the same run) is in
`python -m bench balancer`; this one isolates the two paths that make it, against the baseline of
one UDP datagram sent and received on loopback in the same run (what the kernel costs a packet
anyway).
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import timeit
from collections.abc import Callable

from services.balancer.steering.cid import Layout
from services.balancer.steering.steerer import Steerer

ADDR = ("127.0.0.1", 5555)
PAYLOAD = 1200


async def measure(rounds: int = 5) -> tuple[list[float], list[float]]:
    """Microseconds per datagram, per round: (connection here, forwarded and received by its owner)."""
    held: set[bytes] = set()
    here = Steerer(Layout(), 1 + os.getpid() % 60000, lambda _d, _a: None, held.__contains__)
    owner = Steerer(Layout(), here.port, lambda _d, _a: None, lambda _c: True)
    try:
        mine = here.mint()
        held.add(mine)
        local = bytes((0x40,)) + mine + b"x" * PAYLOAD
        other = bytes((0x40,)) + owner.mint() + b"x" * PAYLOAD

        def forward() -> None:
            here.route(other, ADDR)
            owner._readable()

        return _rounds(lambda: here.route(local, ADDR), 100_000, rounds), _rounds(forward, 20_000, rounds)
    finally:
        here.close()
        owner.close()


def udp_baseline(rounds: int = 5) -> list[float]:
    """Microseconds to send and receive one datagram of the same size over loopback UDP."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target, data = receiver.getsockname(), b"x" * (PAYLOAD + 9)
    try:
        return _rounds(lambda: (sender.sendto(data, target), receiver.recv(65_536)), 20_000, rounds)
    finally:
        sender.close()
        receiver.close()


def _rounds(call: Callable[[], object], number: int, rounds: int) -> list[float]:
    return [timeit.timeit(call, number=number) / number * 1e6 for _ in range(rounds)]


def main() -> None:
    local, forwarded = asyncio.run(measure())
    baseline = statistics.median(udp_baseline())
    print(f"baseline: one {PAYLOAD}-byte UDP datagram sent and received on loopback: {baseline:.2f} us")
    for label, values in (("check, connection held here", local), ("forwarded to the owner and received", forwarded)):
        median = statistics.median(values)
        print(f"{label}: {median:.2f} us per datagram [{min(values):.2f}-{max(values):.2f}], "
              f"{median / baseline:.2f}x the baseline")


if __name__ == "__main__":
    main()
