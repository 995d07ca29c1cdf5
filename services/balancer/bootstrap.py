"""Composition root of the balancer: settings into built parts, real adapters by default, fakes from tests.

Everything the service uses is made here and handed over built (cosmicpython's `bootstrap`):
the router with its pure core, telemetry with its sources, the health verifier, the memory
reclaimer, the worker processes, the `/metrics` endpoint and the step that binds the client
ports. The service passes in only what it owns itself (`Hooks`: its bus's counts and where
ended drains go); nothing is patched on afterwards.

The certificate is checked first, so a half-configured one stops the start with one line.
The parts need the running loop (the router keeps it): call `bootstrap` on the loop that
will run the service, as `service_main` and the tests do.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from services.balancer.core.admission import PeerCounts
from services.balancer.core.backends import Backend, BackendTable
from services.balancer.core.headers import TrustedProxies
from services.balancer.core.health import HealthPolicy
from services.balancer.core.l4plane import FlowBook, drain_load
from services.balancer.core.options import Limits, ProxyOptions
from services.balancer.core.policy import Picker
from services.balancer.core.retry import RetryBudget
from services.balancer.core.trim import TrimPolicy
from services.balancer.core.upstream import Upstream
from services.balancer.l4.build import make_l4, passthrough_of
from services.balancer.l4.plane import PassthroughPort
from services.balancer.l4.service import L4Service
from services.balancer.process.certreload import CertificateReload
from services.balancer.process.endpoint import MetricsEndpoint
from services.balancer.process.health import LoopLag, Probes
from services.balancer.process.reclaim import Reclaimer, glibc_trim
from services.balancer.process.telemetry import Telemetry, make_registry
from services.balancer.process.workers import Workers
from services.balancer.proxy.accesslog import AccessLog
from services.balancer.proxy.router import Router
from services.balancer.quic import Engine, load_engine
from services.balancer.quic.server import server_config, start_server
from services.balancer.service import BalancerService, Front, Hooks, Plane
from services.balancer.settings import BalancerSettings
from services.balancer.steering.cid import Layout
from services.balancer.steering.peers import default_directory
from services.balancer.tcp.listener import bind_tcp_first, start_tcp_listener
from services.balancer.upstream.checks import Verifier
from services.balancer.upstream.h1 import H1Pool, client_tls
from services.balancer.upstream.h3 import H3Upstream
from shared.bus import Bus
from shared.certs import check_pair, ensure_dev_certificate

log = structlog.get_logger("balancer.bootstrap")


def bootstrap(
    settings: BalancerSettings, bus: Bus | None = None, *, engine: Engine | None = None,
    trim: Callable[[], bool] | None = None, workers: Workers | None = None,
) -> BalancerService:
    """Build the balancer service; nothing connects or binds until it is entered.

    Tests may pass a `bus`, an `engine`, a `trim` (instead of glibc's) or `workers`. In `l4` mode
    (`balancer_mode`) no certificate, listener, steering or worker is made (`bootstrap_l4`).
    """
    if settings.balancer_mode == "l4":
        return bootstrap_l4(settings, bus, engine=engine)
    tls = tls_files(settings)
    engine = engine or load_engine(settings.quic_engine)

    def build(hooks: Hooks) -> Plane:
        return make_plane(settings, engine, tls, hooks, trim or glibc_trim(), workers or Workers())

    return BalancerService(settings, build, bus=bus)


def make_plane(
    settings: BalancerSettings, engine: Engine, tls: tuple[Path, Path], hooks: Hooks,
    trim: Callable[[], bool] | None, workers: Workers,
) -> Plane:
    """Every part of a balancer, wired together (needs the running loop)."""
    table = make_table(settings)
    telemetry = Telemetry(panic=lambda: table.panic, rejected_inputs=hooks.rejected_inputs)
    router = make_router(settings, engine, table, telemetry, hooks)
    limits = make_limits(settings)
    policy = TrimPolicy(min_interval_s=settings.balancer_memory_trim_s)
    config = make_server_config(settings, engine, tls)
    return Plane(
        engine=engine, router=router,
        verifier=Verifier(router, settings.health_path.encode(), settings.health_timeout_s),
        reclaimer=Reclaimer(limits.per_ip, policy, telemetry, trim), workers=workers,
        metrics=make_endpoint(settings, telemetry, Probes(LoopLag(), readiness(hooks, table))),
        listen=lambda: listen(settings, engine, config, router, limits),
        reload_certificate=CertificateReload(tls, lambda pair: make_server_config(settings, engine, pair)),
    )


def bootstrap_l4(
    settings: BalancerSettings, bus: Bus | None = None, *, engine: Engine | None = None,
    kernel: Callable[[BalancerSettings], PassthroughPort] | None = None,
) -> L4Service:
    """The balancer in `l4` mode: the router's table, checks, drains and reports, and the kernel's map.

    `kernel` makes the passthrough (tests: a fake of the port); by default the nftables one.
    The engine only speaks HTTP/3 to the VMs' health checks.
    """
    engine = engine or load_engine(settings.quic_engine)

    def build(hooks: Hooks) -> Plane:
        return make_l4_plane(settings, engine, hooks, (kernel or passthrough_of)(settings))

    return L4Service(settings, build, bus=bus)


def make_l4_plane(settings: BalancerSettings, engine: Engine, hooks: Hooks, passthrough: PassthroughPort) -> Plane:
    """An l4 balancer's parts: the table and router as in l7 (drains held open by flows), and the l4 loop."""
    table, book = make_table(settings), FlowBook()
    telemetry = Telemetry(panic=lambda: table.panic, rejected_inputs=hooks.rejected_inputs, flows=lambda: book.flows)
    router = make_router(settings, engine, table, telemetry, hooks, busy=drain_load(table, book))
    policy = TrimPolicy(min_interval_s=settings.balancer_memory_trim_s)

    def no_certificate(*_: object) -> bool:
        return False

    return Plane(
        engine=engine, router=router,
        verifier=Verifier(router, settings.health_path.encode(), settings.health_timeout_s),
        reclaimer=Reclaimer(make_limits(settings).per_ip, policy, telemetry, None), workers=Workers(),
        metrics=make_endpoint(settings, telemetry, Probes(LoopLag(), readiness(hooks, table))),
        listen=no_listener, reload_certificate=no_certificate, l4=make_l4(settings, router, book, passthrough),
    )


async def no_listener() -> Front:
    raise RuntimeError("an l4 balancer binds no client port: the kernel forwards the clients' packets")


def readiness(hooks: Hooks, table: BackendTable) -> Callable[[], str | None]:
    """`/readyz`'s question: the service's own answer (starting, draining), then whether any VM may take a
    request now (the same `candidates` a request gets, panic and the identity bridge included)."""
    loop = asyncio.get_running_loop()

    def not_ready() -> str | None:
        return hooks.not_ready() or (None if table.candidates(loop.time()) else "no_vm")

    return not_ready


def upstream_factory(settings: BalancerSettings, engine: Engine) -> Callable[[Backend], Upstream]:
    """Makes the configured kind of upstream for a backend."""
    tls = client_tls(settings.upstream_verify_tls, settings.upstream_ca_file) if settings.upstream_tls else None
    ack_delay_s = settings.quic_ack_delay_ms / 1000

    def make(backend: Backend) -> Upstream:
        if settings.upstream_protocol == "http3":
            return H3Upstream(
                engine, backend.host, backend.port, settings.upstream_connect_timeout_s, settings.upstream_verify_tls,
                ack_delay_s, settings.upstream_ca_file, settings.upstream_server_name,
            )
        return H1Pool(backend.host, backend.port, tls, settings.upstream_connect_timeout_s, settings.upstream_pool_size,
                      settings.upstream_server_name, settings.upstream_try_timeout_s)

    return make


def make_table(settings: BalancerSettings) -> BackendTable:
    """The backend table with the configured health, ejection, slow start and panic rules."""
    health = HealthPolicy(
        rise=settings.health_rise, fall=settings.health_fall, ejection_consecutive=settings.ejection_consecutive,
        ejection_consecutive_5xx=settings.ejection_consecutive_5xx,
        ejection_base_s=settings.ejection_base_s, ejection_max_s=settings.ejection_max_s,
    )
    return BackendTable(
        health, settings.balancer_slow_start_s, settings.upstream_port, settings.balancer_panic_threshold
    )


def make_options(settings: BalancerSettings) -> ProxyOptions:
    hash_header = None if settings.balancer_hash_key == "client" else settings.balancer_hash_key.lower().encode()
    return ProxyOptions(
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


def make_router(
    settings: BalancerSettings, engine: Engine, table: BackendTable, telemetry: Telemetry, hooks: Hooks,
    busy: Callable[[str], int] | None = None,
) -> Router:
    """The router and its pure core, configured from settings (needs a running loop); `busy`: what holds a drain."""
    picker = Picker(settings.balancer_policy, settings.balancer_slow_start_s, rng=random.Random())
    budget = RetryBudget(ratio=settings.balancer_retry_budget)
    access = AccessLog(asyncio.get_running_loop(), settings.balancer_access_log, settings.balancer_access_log_sample)
    return Router(
        table, picker, budget, upstream_factory(settings, engine), make_options(settings), hooks.drained,
        telemetry, access, busy,
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
        per_ip=PeerCounts(
            settings.listen_max_connections_per_ip, settings.listen_ipv4_prefix, settings.listen_ipv6_prefix
        ),
        max_resets_per_s=settings.listen_max_resets_per_s,
        http_idle_timeout_s=settings.listen_http_idle_timeout_s,
    )


def make_endpoint(settings: BalancerSettings, telemetry: Telemetry, probes: Probes) -> MetricsEndpoint | None:
    """The admin port (`/metrics`, `/healthz`, `/readyz`) when `balancer_metrics_port` is set (loopback unless
    told otherwise)."""
    if settings.balancer_metrics_port is None:
        return None
    return MetricsEndpoint(
        make_registry(telemetry), settings.balancer_metrics_host, settings.balancer_metrics_port,
        settings.balancer_metrics_port_span, probes,
    )


def tls_files(settings: BalancerSettings) -> tuple[Path, Path]:
    """The configured certificate and key, checked; the development pair only when neither is set.

    Half a configuration raises `CertificateError` (a `SettingsError`: one line, non-zero exit).
    The development certificate is logged, as a warning when clients beyond this host can reach it.
    """
    pair = check_pair(settings.tls_cert, settings.tls_key)
    if pair is not None:
        return pair
    pair = ensure_dev_certificate(settings.balancer_state_dir)
    level = log.info if loopback(settings.listen_host) else log.warning
    level("balancer.dev_certificate", cert=str(pair[0]), listen_host=settings.listen_host,
          why="no QUICFLEET_TLS_CERT/QUICFLEET_TLS_KEY: a self-signed certificate no browser trusts")
    return pair


def loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server_config(settings: BalancerSettings, engine: Engine, tls: tuple[Path, Path]) -> Any:
    """The server's QUIC configuration with the checked certificate."""
    cert, key = (str(p) for p in tls)
    config = server_config(engine, cert, key, settings.listen_idle_timeout_s, settings.quic_max_datagram_size)
    config.max_stream_data = settings.listen_max_request_buffer_bytes
    return config


def steering_layout(settings: BalancerSettings) -> Layout | None:
    meet = settings.quic_steering_dir or default_directory(settings.balancer_state_dir)
    return Layout(settings.quic_lb_config_id, settings.quic_lb_node, meet) if settings.quic_steering else None


async def listen(settings: BalancerSettings, engine: Engine, config: Any, router: Router, limits: Limits) -> Front:
    """Bind the client ports: TCP first when on (port 0: one number for both), then QUIC on UDP."""
    host, port = settings.listen_host, settings.listen_port
    tcp_sock = bind_tcp_first(host, port) if settings.listen_tcp else None  # browsers: TLS on TCP too
    port = tcp_sock.getsockname()[1] if tcp_sock is not None else port
    server, port = await start_server(engine, host, port, config, router, limits, steering_layout(settings))
    tcp = await start_tcp_listener(settings, tcp_sock, router, limits) if tcp_sock is not None else None
    return Front(server=server, tcp=tcp, port=port)
