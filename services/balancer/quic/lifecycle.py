"""The phases of one client connection, and the only moves between them.

A connection's life used to be read from eight flags (half-open, counted, admitted, refused,
closing, ...) that had to agree; here it is one `Phase`, and `NEXT` lists every transition the
connection makes, so a reader sees the whole lifecycle in one table:

    NEW ──> HANDSHAKING ──> OPEN ──> DEPARTING ──> CLOSING ──> CLOSED
     │           └───────────────────────┘^  └─────────┘^        ^
     └──> REFUSED ──> CLOSING ────────────────────────────────────┘

Whether its handshake is over is the admission ticket's business (`Ticket.half_open`): a connection
asked to leave during its handshake is DEPARTING while its handshake finishes.
"""

from __future__ import annotations

from enum import Enum


class Phase(Enum):
    """Where one client connection is in its life."""

    NEW = "new"
    """Made by the engine for a first datagram, not yet admitted."""
    REFUSED = "refused"
    """Over a connection limit: closed at once, or after the handshake where the engine cannot close earlier."""
    HANDSHAKING = "handshaking"
    """Admitted (it holds a ticket); the QUIC handshake is under way."""
    OPEN = "open"
    """Serving requests."""
    DEPARTING = "departing"
    """GOAWAY sent (or due once HTTP/3 is negotiated): requests below its line finish, then it closes."""
    CLOSING = "closing"
    """CONNECTION_CLOSE sent or received: nothing more is fed to HTTP/3."""
    CLOSED = "closed"
    """The engine reported the end: its ticket is back and its exchanges are reset."""


_ENDING = frozenset({Phase.CLOSING, Phase.CLOSED})

NEXT: dict[Phase, frozenset[Phase]] = {
    Phase.NEW: frozenset({Phase.HANDSHAKING, Phase.REFUSED, Phase.DEPARTING}) | _ENDING,
    Phase.REFUSED: _ENDING,
    Phase.HANDSHAKING: frozenset({Phase.OPEN, Phase.DEPARTING}) | _ENDING,
    Phase.OPEN: frozenset({Phase.DEPARTING}) | _ENDING,
    Phase.DEPARTING: _ENDING,
    Phase.CLOSING: frozenset({Phase.CLOSED}),
    Phase.CLOSED: frozenset(),
}
"""The phases each phase may move to."""

FEEDS_HTTP = frozenset(Phase) - _ENDING
"""Phases whose QUIC events still go to the HTTP/3 layer (qh3 refuses sends once closing)."""

MAY_DEPART = frozenset({Phase.NEW, Phase.HANDSHAKING, Phase.OPEN})
"""Phases a GOAWAY can start from (a refused, departing or closing connection is already on its way)."""


def moved(current: Phase, to: Phase) -> Phase:
    """`to`, after checking that `current` may move there (a wrong move is a bug in the connection)."""
    if to not in NEXT[current]:
        raise ValueError(f"a connection cannot go from {current.name} to {to.name}")
    return to
