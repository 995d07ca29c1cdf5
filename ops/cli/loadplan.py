"""What `quicfleet load` is asked to run: the target, the plan, and the open loop's schedule.

Parsed and checked before a socket opens, so a usage error is reported before any request is sent;
separate from the outcome and statistics modules because nothing here depends on an answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

Mode = Literal["rate", "concurrency"]


@dataclass(frozen=True)
class Target:
    """Where the requests go: the QUIC endpoint and the request's authority and path."""

    host: str
    port: int
    path: str

    @property
    def authority(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.authority}{self.path}"


def parse_target(url: str, path: str | None = None) -> Target:
    """`https://HOST[:PORT][/PATH]` (the scheme may be left out); `path` replaces the URL's path.

    ValueError names what is wrong: HTTP/3 is always TLS, so only https makes sense.
    """
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if parts.scheme != "https":
        raise ValueError(f"{url}: HTTP/3 needs an https:// URL")
    try:
        port = parts.port or 443
    except ValueError:
        raise ValueError(f"{url}: the port is not a number from 0 to 65535") from None
    if not parts.hostname:
        raise ValueError(f"{url}: no host")
    if path is None:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.hostname, port, "/" + path.lstrip("/"))


@dataclass(frozen=True)
class Plan:
    """What to run: where, how hard (a rate or a concurrency), for how long, and within what limits."""

    target: Target
    duration_s: float
    rate: float | None = None
    concurrency: int | None = None
    max_in_flight: int = 1000
    connections: int = 2
    timeout_s: float = 5.0
    verify: bool = False
    ca_file: Path | None = None

    @property
    def mode(self) -> Mode:
        return "rate" if self.rate is not None else "concurrency"


def check_mode(rate: float | None, concurrency: int | None) -> Mode:
    """Exactly one of the two loops; ValueError (a usage error) for neither or both."""
    if (rate is None) == (concurrency is None):
        raise ValueError("give exactly one of --rate (open loop) or --concurrency (closed loop)")
    return "rate" if rate is not None else "concurrency"


@dataclass(frozen=True)
class RateSchedule:
    """The open loop: request k starts at k / rate seconds, whatever happened to the ones before.

    Starting on schedule rather than when an answer comes back is what makes a slow balancer show
    up as latency and errors; a closed loop would quietly send less instead.
    """

    rate: float
    duration_s: float

    @property
    def total(self) -> int:
        """How many requests the run sends: at least one; the epsilon makes 100 * 0.57 (56.99999999999999) 57."""
        return max(1, math.floor(self.rate * self.duration_s + 1e-9))

    def at(self, index: int) -> float:
        """When request `index` (from 0) is due, in seconds from the start."""
        return index / self.rate

    def due(self, elapsed_s: float) -> int:
        """How many requests are due by `elapsed_s`: those a late sender must catch up on at once."""
        if elapsed_s < 0:
            return 0
        return min(self.total, math.floor(elapsed_s * self.rate + 1e-9) + 1)
