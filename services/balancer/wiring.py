"""Settings into objects: the router with its core pieces, the server config, the limits."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from services.balancer.core.admission import PeerCounts
from services.balancer.core.backends import Backend, BackendTable
from services.balancer.core.drain import DrainOver
from services.balancer.core.headers import TrustedProxies
from services.balancer.core.health import HealthPolicy
from services.balancer.core.options import Limits, ProxyOptions
from services.balancer.core.policy import Picker
from services.balancer.core.retry import RetryBudget
from services.balancer.core.upstream import Upstream
from services.balancer.process.telemetry import Telemetry
from services.balancer.proxy.accesslog import AccessLog
from services.balancer.proxy.router import Router
from services.balancer.quic import Engine
from services.balancer.quic.server import server_config
from services.balancer.settings import BalancerSettings
from services.balancer.upstream.h1 import H1Pool, client_tls
from services.balancer.upstream.h3 import H3Upstream
from shared.certs import certificate_pair


def upstream_factory(settings: BalancerSettings, engine: Engine) -> Callable[[Backend], Upstream]:
    """Makes the configured kind of upstream for a backend."""
    tls = client_tls(settings.upstream_verify_tls) if settings.upstream_tls else None
    ack_delay_s = settings.quic_ack_delay_ms / 1000

    def make(backend: Backend) -> Upstream:
        if settings.upstream_protocol == "http3":
            return H3Upstream(
                engine, backend.host, backend.port, settings.upstream_connect_timeout_s, settings.upstream_verify_tls,
                ack_delay_s,
            )
        return H1Pool(backend.host, backend.port, tls, settings.upstream_connect_timeout_s, settings.upstream_pool_size)

    return make


def make_router(settings: BalancerSettings, engine: Engine, on_drained: Callable[[DrainOver], None]) -> Router:
    """The router and its pure core, configured from settings (needs a running loop)."""
    health = HealthPolicy(
        rise=settings.health_rise, fall=settings.health_fall, ejection_consecutive=settings.ejection_consecutive,
        ejection_consecutive_5xx=settings.ejection_consecutive_5xx,
        ejection_base_s=settings.ejection_base_s, ejection_max_s=settings.ejection_max_s,
    )
    table = BackendTable(
        health, settings.balancer_slow_start_s, settings.upstream_port, settings.balancer_panic_threshold
    )
    picker = Picker(settings.balancer_policy, settings.balancer_slow_start_s, rng=random.Random())
    hash_header = None if settings.balancer_hash_key == "client" else settings.balancer_hash_key.lower().encode()
    options = ProxyOptions(
        via=f"3 quicfleet-{settings.instance[:40]}".encode(),
        backend_header=settings.balancer_backend_header,
        first_byte_timeout_s=settings.upstream_first_byte_timeout_s,
        try_timeout_s=settings.upstream_try_timeout_s,
        idle_timeout_s=settings.upstream_idle_timeout_s,
        max_body_bytes=settings.listen_max_body_bytes,
        request_buffer_bytes=settings.listen_max_request_buffer_bytes,
        hash_header=hash_header,
        trusted_proxies=TrustedProxies(settings.trusted_proxies),
        identity_check=settings.balancer_identity_check,
    )
    budget = RetryBudget(ratio=settings.balancer_retry_budget)
    access = AccessLog(asyncio.get_running_loop(), settings.balancer_access_log, settings.balancer_access_log_sample)
    return Router(
        table, picker, budget, upstream_factory(settings, engine), options, on_drained, Telemetry(), access
    )


def make_limits(settings: BalancerSettings) -> Limits:
    return Limits(
        max_connections=settings.listen_max_connections,
        max_streams=settings.listen_max_streams_per_connection,
        max_header_bytes=settings.listen_max_header_bytes,
        retry_always=settings.quic_retry == "always",
        retry_threshold=settings.quic_retry_threshold,
        ack_delay_s=settings.quic_ack_delay_ms / 1000,
        ack_with_response=settings.quic_ack_with_response,
        coalesce_s=settings.quic_coalesce_ms / 1000,
        per_ip=PeerCounts(settings.listen_max_connections_per_ip),
    )


def make_server_config(settings: BalancerSettings, engine: Engine) -> Any:
    """The server's QUIC configuration with the configured or a development certificate."""
    cert, key = (str(p) for p in certificate_pair(settings.tls_cert, settings.tls_key, settings.balancer_state_dir))
    config = server_config(engine, cert, key, settings.listen_idle_timeout_s, settings.quic_max_datagram_size)
    config.max_stream_data = settings.listen_max_request_buffer_bytes
    return config
