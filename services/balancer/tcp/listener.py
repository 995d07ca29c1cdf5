"""The TCP listener: a TLS server on the UDP listener's port number, HTTP/2 or HTTP/1.1 by ALPN.

Browsers reach an origin over TCP first and use HTTP/3 only once an answer carried
`alt-svc: h3=":<port>"`; every answer here carries it. The socket is bound with SO_REUSEPORT,
like the UDP one, so every worker process listens on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
from collections import Counter
from dataclasses import replace
from pathlib import Path

import structlog

from services.balancer.core.admission import Admission
from services.balancer.core.options import Limits, ProxyOptions
from services.balancer.proxy.router import Router
from services.balancer.settings import BalancerSettings
from services.balancer.tcp.connection import TcpConnection
from services.balancer.tcp.h1 import H1Connection
from services.balancer.tcp.h2 import H2Connection
from shared.certs import certificate_pair

log = structlog.get_logger("balancer.tcp")

ALPN = ["h2", "http/1.1"]
VERSIONS = {"h1": b"1.1", "h2": b"2"}
"""The protocol version each connection kind puts in `via` (RFC 9110 section 7.6.3: the one received)."""
BACKLOG = 1024


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server TLS context offering HTTP/2 then HTTP/1.1 (TLS 1.2 at least, as HTTP/2 requires)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(ALPN)
    return context


def certificate(settings: BalancerSettings) -> tuple[Path, Path]:
    """The configured certificate and key, else the development pair QUIC uses too."""
    return certificate_pair(settings.tls_cert, settings.tls_key, settings.balancer_state_dir)


def reuseport_tcp_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound with SO_REUSEPORT so worker processes share one port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def bind_tcp_first(host: str, port: int, tries: int = 50) -> socket.socket:
    """The TCP listener's socket, bound before the UDP listener's so that both get the same number.

    With `port` 0 the kernel picks a TCP port, and one that a UDP socket holds is skipped. Bound
    (not merely probed) before the UDP side starts, the number cannot go to an outgoing TCP
    connection's ephemeral port in between; binding TCP after UDP failed so about once in a
    hundred starts on a busy test machine.
    """
    if port:
        return reuseport_tcp_socket(host, port)
    for _ in range(tries):
        sock = reuseport_tcp_socket(host, 0)
        if udp_free(host, sock.getsockname()[1]):
            return sock
        sock.close()
    raise OSError(errno.EADDRINUSE, f"no port on {host} free on both TCP and UDP")


def udp_free(host: str, port: int) -> bool:
    """Whether nobody holds UDP `port` (a plain bind: one that would join another process's
    SO_REUSEPORT group counts as taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def via_for(options: ProxyOptions, version: bytes) -> ProxyOptions:
    """`options` whose `via` names `version` instead of HTTP/3 (`3 quicfleet-x` -> `2 quicfleet-x`)."""
    _, _, node = options.via.partition(b" ")
    return replace(options, via=version + b" " + (node or options.via))


class TcpListener:
    """The TLS server and its connections: counts, per-protocol options, shutdown."""

    def __init__(self, router: Router, limits: Limits, port: int, max_age_s: int, idle_timeout_s: float) -> None:
        self.router = router
        self.limits = limits
        """Shared with the UDP listener: its `max_connections` dropping to 0 on shutdown refuses here too."""
        self.admission = Admission(limits)
        """This listener's door (its own open count; the per-network counts are QUIC's too)."""
        self.options = {kind: via_for(router.options, version) for kind, version in VERSIONS.items()}
        self.alt_svc = f'h3=":{port}"; ma={max_age_s}'.encode()
        self.idle_timeout_s = min(idle_timeout_s, limits.http_idle_timeout_s)
        """No request in flight this long closes a connection: TCP has no transport idle of its own, so one timer
        serves both rules (`listen_idle_timeout_s` and `listen_http_idle_timeout_s`, the shorter wins)."""
        self.requests: Counter[str] = Counter()
        """Requests taken per protocol (`h1`, `h2`): which one served a browser shows here."""
        self.open: set[TcpConnection] = set()
        self.server: asyncio.Server | None = None
        self.tls: ssl.SSLContext | None = None
        """The context every new connection's TLS starts from (`use_certificate` loads a renewed pair into it)."""
        self._empty = asyncio.Event()

    def accept(self) -> asyncio.Protocol:
        """The protocol of a new connection: HTTP/2 or HTTP/1.1, as TLS negotiated."""
        return Handoff(self)

    def use_certificate(self, cert: Path, key: Path) -> None:
        """Serve `cert` on new connections; OpenSSL copied the old one into each open connection, which keeps it."""
        if self.tls is not None:
            self.tls.load_cert_chain(cert, key)

    @property
    def connections(self) -> int:
        """Connections admitted and not yet lost."""
        return self.admission.open

    def opened(self, connection: TcpConnection) -> None:
        self.open.add(connection)
        self._empty.clear()

    def closed(self, connection: TcpConnection) -> None:
        self.open.discard(connection)
        if not self.open:
            self._empty.set()

    async def close(self, grace_s: float) -> None:
        """Stop accepting; let each connection finish its response and close; cut what is left after `grace_s`.

        The service passes the same share of `shutdown_grace_s` that QUIC's requests get, so a request in
        flight outlives a SIGTERM on either transport when the grace allows it.
        """
        if self.server is not None:
            self.server.close()
        for connection in list(self.open):
            connection.shutdown()
        if self.open:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._empty.wait(), grace_s)
        for connection in list(self.open):
            if connection.transport is not None:
                connection.transport.abort()
        log.info("tcp.closed", requests=dict(self.requests))


class Handoff(asyncio.Protocol):
    """Picks the connection's protocol once TLS has negotiated ALPN, then steps aside."""

    def __init__(self, listener: TcpListener) -> None:
        self.listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        connection = H2Connection(self.listener) if alpn == "h2" else H1Connection(self.listener)
        transport.set_protocol(connection)
        connection.connection_made(transport)


async def start_tcp_listener(
    settings: BalancerSettings, sock: socket.socket, router: Router, limits: Limits
) -> TcpListener:
    """Listen with TLS on `sock` (from `bind_tcp_first`: the UDP listener's port number)."""
    port = sock.getsockname()[1]
    listener = TcpListener(router, limits, port, settings.listen_alt_svc_max_age_s, settings.listen_idle_timeout_s)
    loop = asyncio.get_running_loop()
    listener.tls = tls_context(*certificate(settings))
    listener.server = await loop.create_server(
        listener.accept, sock=sock, ssl=listener.tls, backlog=BACKLOG,
        ssl_handshake_timeout=settings.listen_tcp_handshake_timeout_s,
    )
    log.info("tcp.listening", host=sock.getsockname()[0], port=port, alpn=ALPN)
    return listener
