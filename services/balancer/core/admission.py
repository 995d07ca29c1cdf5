"""Who may open a connection: one door that both listeners use (enter -> ticket -> leave).

Two caps apply to every new connection, QUIC and TCP alike: the listener's `max_connections`
(each listener counts its own, and the count drops to 0 on shutdown), and connections per client
address across both listeners, so one address cannot take the whole limit (a handshake storm from
one host, or a NAT that went wrong). Addresses are counted per network prefix (`/32` and `/64` by
default): one IPv6 host owns a whole /64 and could otherwise open a connection from each of its
2^64 addresses; an IPv4-mapped IPv6 address counts as the IPv4 address it carries.

A listener calls `Admission.enter` when a connection arrives and gets a `Ticket` (or the reason it
is refused); the connection holds the ticket and gives it back with `leave` when it ends, whatever
the path; a ticket given back twice counts once. Pure bookkeeping: the glue logs and closes.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass
from typing import Protocol


def peer_key(ip: str, ipv4_prefix: int = 32, ipv6_prefix: int = 64) -> str:
    """The network `ip` is counted under: the address itself at a full-length prefix, else its network."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip  # not an address (a unix peer, "unknown"): counted as it is written
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
    if prefix >= address.max_prefixlen:
        return str(address)
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


class PeerCounts:
    """Open connections by client network (see `peer_key`), against `cap` each.

    Networks with nothing open are forgotten, so the table holds only live ones. The totals (`held`,
    and its `peak` since someone last reset it) tell `reclaim` when a connection storm is over.
    """

    def __init__(self, cap: int, ipv4_prefix: int = 32, ipv6_prefix: int = 64) -> None:
        self.cap = cap
        self.ipv4_prefix, self.ipv6_prefix = ipv4_prefix, ipv6_prefix
        self.open: Counter[str] = Counter()
        """Open connections by network key (the plain address at /32 and /128)."""
        self.refused = 0
        """Connections refused so far because their network was at the cap (for tests and logs)."""
        self.held = 0
        """Connections open now, all networks together."""
        self.peak = 0
        """The most `held` has been since the counts began or `peak` was last set (by `reclaim`)."""

    def key(self, ip: str) -> str:
        return peer_key(ip, self.ipv4_prefix, self.ipv6_prefix)

    def admit(self, ip: str) -> bool:
        """Count one more connection from `ip`'s network, unless that network already holds `cap`."""
        return self.admit_key(self.key(ip))

    def admit_key(self, key: str) -> bool:
        if self.open[key] >= self.cap:
            self.refused += 1
            return False
        self.open[key] += 1
        self.held += 1
        self.peak = max(self.peak, self.held)
        return True

    def leave(self, ip: str) -> None:
        """One connection from `ip`'s network is gone."""
        self.leave_key(self.key(ip))

    def leave_key(self, key: str) -> None:
        left = self.open[key] - 1
        self.held -= 1
        if left > 0:
            self.open[key] = left
        else:
            del self.open[key]


@dataclass(eq=False, slots=True)
class Ticket:
    """One admitted connection's place: given back exactly once (`Admission.leave`)."""

    key: str
    """The network the connection is counted under (its first address: a migration does not move it)."""
    half_open: bool
    """Admitted before its handshake finished (QUIC): counted in `Admission.half_open` until it does."""
    held: bool = True


class Caps(Protocol):
    """The limits admission applies (`options.Limits`, which imports this module, has them)."""

    max_connections: int
    per_ip: PeerCounts


class Admission:
    """One listener's door: its open and half-open counts against `limits` (shared by both listeners)."""

    def __init__(self, limits: Caps) -> None:
        self.limits = limits
        """Shared: `max_connections` dropping to 0 on shutdown refuses at every listener, and the per-network
        counts are one table for QUIC and TCP together."""
        self.open = 0
        self.half_open = 0
        """Admitted connections whose handshake is not over (QUIC Retry turns on above a threshold of them)."""

    def enter(self, ip: str, half_open: bool = False) -> Ticket | str:
        """A ticket for a new connection from `ip`, or why it is refused: `limit` (this listener is full) or
        `per_ip` (its network holds its share)."""
        if self.open >= self.limits.max_connections:
            return "limit"
        counts = self.limits.per_ip
        key = counts.key(ip)
        if not counts.admit_key(key):
            return "per_ip"
        self.open += 1
        self.half_open += half_open
        return Ticket(key, half_open)

    def handshake_done(self, ticket: Ticket) -> None:
        """The connection finished its handshake: it no longer counts as half-open."""
        if ticket.half_open:
            ticket.half_open = False
            self.half_open -= 1

    def leave(self, ticket: Ticket) -> bool:
        """The connection ended: give its place back (True the first time, False for a ticket already back)."""
        if not ticket.held:
            return False
        self.handshake_done(ticket)
        ticket.held = False
        self.open -= 1
        self.limits.per_ip.leave_key(ticket.key)
        return True
