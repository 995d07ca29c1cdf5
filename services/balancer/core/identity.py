"""Whether whatever answers at a backend's address is the VM it was announced as.

A DHCP lease recycled to another machine, or a stale or forged `ready` event, puts some other
host at a VM's address, and health checks alone would trust whatever answers there. A VM
announced with `identity` sends its libvirt domain UUID in an `x-quicfleet-vm` header on every
response; this keeps, per backend, the UUID it must send and what the checks have seen.

States: `unchecked` (nothing to check: trusted as before), `unverified` (just added, moved or
given another UUID: not a candidate until an active check sees the right UUID), `verified`, and
`mismatch` (something else answered: out at once, back after `rise` active checks in a row see
the right UUID, like an unhealthy VM). Pure: the glue feeds what it saw, with `now`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from shared.contract.base import IDENTITY_HEADER

HEADER = IDENTITY_HEADER.encode()
MAX_SEEN_CHARS = 64
"""What an impostor sent is cut to this length before it reaches a log line or a reason."""


class IdentityState(StrEnum):
    UNCHECKED = "unchecked"
    UNVERIFIED = "unverified"
    VERIFIED = "verified"
    MISMATCH = "mismatch"


def identity_of(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The `x-quicfleet-vm` value of a response (None when absent), trimmed and lower-cased.

    HTTP/1.1 upstreams hand names over as the VM wrote them, so they are compared case-blind;
    the UUID is lower-cased because `dmidecode` and friends print it either way.
    """
    for name, value in headers:
        if len(name) == len(HEADER) and name.lower() == HEADER:
            return value.strip().lower()
    return None


def describe(seen: bytes | None) -> str:
    """What answered, fit for a log line: the header's value (short, printable) or its absence."""
    if seen is None:
        return f"no {IDENTITY_HEADER} header"
    text = "".join(chr(c) if 0x20 <= c < 0x7F else "?" for c in seen[:MAX_SEEN_CHARS])
    return text or "an empty header"


@dataclass(slots=True)
class Verification:
    """One backend's identity: the UUID it must send and what active and passive checks saw."""

    uuid: str | None = None
    rise: int = 2
    state: IdentityState = IdentityState.UNCHECKED
    streak: int = 0
    """Right answers of active checks in a row since the last mismatch."""
    seen: str = ""
    """What answered at the last mismatch (`describe`d)."""
    expected: bytes | None = None
    """`uuid` as the header carries it, so the request path compares bytes without encoding."""

    @classmethod
    def of(cls, uuid: str | None, rise: int = 2) -> Verification:
        """A fresh verification: unverified when there is a UUID to check, else unchecked."""
        if uuid is None:
            return cls(rise=rise)
        return cls(uuid, rise, IdentityState.UNVERIFIED, expected=uuid.lower().encode())

    @property
    def trusted(self) -> bool:
        """True when the backend may get requests as far as its identity goes."""
        return self.state is IdentityState.UNCHECKED or self.state is IdentityState.VERIFIED

    @property
    def pending(self) -> bool:
        """True while no active check has seen the right UUID yet (one should run now)."""
        return self.state is IdentityState.UNVERIFIED

    @property
    def reason(self) -> str | None:
        """Why identity keeps the backend out (None when it does not)."""
        if self.state is IdentityState.MISMATCH:
            return f"address answered as another VM ({self.seen})"
        if self.state is IdentityState.UNVERIFIED:
            return "identity not verified yet"
        return None

    def matches(self, seen: bytes | None) -> bool:
        """Whether a response carrying `seen` came from this VM (always, when nothing is checked)."""
        return self.expected is None or seen == self.expected

    def confirmed(self) -> bool:
        """An active check saw the right UUID; returns True when this made the backend trusted.

        The first sight verifies a new backend (the provisioner's readiness probe has already
        seen it answer); after a mismatch it takes `rise` in a row, as an unhealthy VM does.
        """
        if self.state is IdentityState.UNVERIFIED:
            self.state, self.streak = IdentityState.VERIFIED, 0
            return True
        if self.state is not IdentityState.MISMATCH:
            return False
        self.streak += 1
        if self.streak < self.rise:
            return False
        self.state, self.streak = IdentityState.VERIFIED, 0
        return True

    def mismatched(self, seen: bytes | None) -> bool:
        """Something else answered (active or passive check); returns True when this is news.

        News is the backend leaving trust (or its first check failing), or a different impostor
        answering than last time: worth a warning each, while the same impostor answering every
        check interval is counted but not logged again.
        """
        if self.expected is None:
            return False
        what = describe(seen)
        news = self.state is not IdentityState.MISMATCH or what != self.seen
        self.state, self.streak, self.seen = IdentityState.MISMATCH, 0, what
        return news
