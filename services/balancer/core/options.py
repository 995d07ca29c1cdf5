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
    """Open connections per client network (QUIC and TCP together) against `listen_max_connections_per_ip`,
    counted per `listen_ipv4_prefix` / `listen_ipv6_prefix` (the rule is `admission.Admission`'s)."""
    max_resets_per_s: int = 100
    """Streams one client connection may reset per second before it is closed (`listen_max_resets_per_s`)."""
    http_idle_timeout_s: float = 300.0
    """A connection with no request in flight this long gets GOAWAY and is closed, whatever PINGs keep its
    transport alive (`listen_http_idle_timeout_s`)."""
