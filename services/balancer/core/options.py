"""The balancer's knobs, taken from settings once: per request (`ProxyOptions`) and per listener
(`Limits`). Plain values, so the listener, its connections, the router and the exchanges can all
read them without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.balancer.core.admission import PeerCounts
from services.balancer.core.headers import TrustedProxies


@dataclass(frozen=True)
class ProxyOptions:
    """Per-request knobs taken from settings once."""

    via: bytes = b"3 quicfleet"
    backend_header: bool = True
    first_byte_timeout_s: float = 30.0
    try_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0
    max_body_bytes: int = 64 * 1024 * 1024
    request_buffer_bytes: int = 1024 * 1024
    hash_header: bytes | None = None
    trusted_proxies: TrustedProxies = field(default_factory=TrustedProxies)
    """Peers whose forwarding headers and request id are kept (empty: every client's are replaced)."""
    identity_check: bool = True
    """Whether VMs announced with `identity` must prove it (`balancer_identity_check`)."""


@dataclass
class Limits:
    """Client-facing limits taken from settings once (`max_connections` drops to 0 on shutdown)."""

    max_connections: int
    max_streams: int
    max_header_bytes: int
    retry_always: bool
    retry_threshold: int
    ack_delay_s: float
    ack_with_response: bool = True
    coalesce_s: float = 0.0
    per_ip: PeerCounts = field(default_factory=lambda: PeerCounts(1_000_000))
    """Open connections per client address (QUIC and TCP together) against `listen_max_connections_per_ip`."""

    def refusal(self, connections: int, ip: str) -> str | None:
        """Why a new connection from `ip` is refused (`limit`, `per_ip`), or None once it is counted for `ip`:
        the one rule of both listeners, with `connections` the caller's open count."""
        if connections >= self.max_connections:
            return "limit"
        return None if self.per_ip.admit(ip) else "per_ip"
