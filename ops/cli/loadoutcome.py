"""What one `quicfleet load` request ended in: the reply, its error kind, the backend that answered.

The HTTP/3 client (`loadclient`) fills a `Reply`; the run turns it into an `Outcome` here, and the
statistics (`loadstats`) count outcomes. Plain values and pure functions, tested without a balancer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from shared.contract.base import IDENTITY_HEADER

BACKEND_HEADER = "x-quicfleet-backend"
"""The response header in which the balancer names the VM that answered."""
SERVER_ADDRESS = "Server Address:"
"""How the template's backends start the body line that says which address answered."""
BODY_HEAD_BYTES = 512
"""How much of each body is kept: enough for `Server Address`, never a whole large answer."""


class ErrorKind(StrEnum):
    """Why a request failed; counted apart, so an overload reads differently from an outage."""

    SERVER = "5xx"
    CLIENT = "4xx"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    """No QUIC connection to send it on, or the connection closed before the answer."""
    RESET = "reset"
    """The stream was reset (or ended) before a response came: the balancer refused it."""
    DROPPED = "dropped"
    """Never sent: it fell due while `max_in_flight` requests were still waiting (open loop)."""


@dataclass(frozen=True)
class Backend:
    """Who answered: the VM name the balancer adds, the UUID the VM sends, the address its body names."""

    name: str | None = None
    uuid: str | None = None
    address: str | None = None

    def label(self) -> str:
        """The VM's name (else its UUID, else its address), with the address beside it when both are known."""
        main = self.name or self.uuid or self.address or "?"
        return f"{main} ({self.address})" if self.address and main != self.address else main


def server_address(body_head: str) -> str | None:
    """The `Server Address: <ip>:<port>` a template backend puts in its body, if there is one."""
    for line in body_head.splitlines():
        if line.startswith(SERVER_ADDRESS):
            return line[len(SERVER_ADDRESS):].strip()[:80] or None
    return None


def backend_of(headers: Mapping[str, str], body_head: str) -> Backend | None:
    """The backend a response names in its headers and body; None when it names none (the balancer's own)."""
    found = Backend(headers.get(BACKEND_HEADER), headers.get(IDENTITY_HEADER), server_address(body_head))
    return None if found == Backend() else found


@dataclass(frozen=True)
class Reply:
    """What came back on one stream: the status (0: none), the headers kept, the start of the body."""

    status: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)
    body_head: str = ""
    reset: bool = False


@dataclass(frozen=True)
class Outcome:
    """How one request ended: its status (0 when none came), why it failed, its latency when answered."""

    status: int = 0
    error: ErrorKind | None = None
    latency_s: float | None = None
    backend: Backend | None = None


def classify(status: int) -> ErrorKind | None:
    """None for a status that counts as done (below 400); a stream that ended with none was reset."""
    if status >= 500:
        return ErrorKind.SERVER
    if status >= 400:
        return ErrorKind.CLIENT
    if status < 100:
        return ErrorKind.RESET
    return None


def outcome(reply: Reply, latency_s: float) -> Outcome:
    """A reply as counted: a reset stream failed whatever it had received, anything else by its status."""
    error = ErrorKind.RESET if reply.reset else classify(reply.status)
    return Outcome(reply.status, error, latency_s, backend_of(reply.headers, reply.body_head))


def failed(kind: ErrorKind) -> Outcome:
    """A request that got no response at all."""
    return Outcome(error=kind)
