"""SIGHUP: read the certificate and key again, for new connections only, without a restart.

A renewed certificate (certbot or lego every 60 days or so) would otherwise need a restart of
each replica. On SIGHUP the pair at the configured paths is loaded into fresh objects first: a
chain that does not parse, or a key that is not the certificate's, is refused with one error
line and the running pair stays. Only a pair that loaded is put in place: the QUIC server gets a
new configuration (each connection copies what it needs at its handshake, so open ones keep
theirs) and the TCP listener's TLS context loads it in place (OpenSSL copies the certificate
into each connection when it is made, so open connections keep the old one too).
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from services.balancer.quic.server import ProxyServer
from services.balancer.tcp.listener import TcpListener, tls_context

log = structlog.get_logger("balancer.certificates")


def fingerprint(cert: Path) -> str:
    """SHA-256 of the first certificate of a PEM chain (what `openssl x509 -fingerprint -sha256` prints)."""
    text = cert.read_text()
    start = text.index("-----BEGIN CERTIFICATE-----")
    end = text.index("-----END CERTIFICATE-----", start) + len("-----END CERTIFICATE-----")
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(text[start:end])).hexdigest()


class CertificateReload:
    """Puts the pair at `pair`'s paths in place on the listeners; `quic_config` makes the QUIC side's."""

    def __init__(self, pair: tuple[Path, Path], quic_config: Callable[[tuple[Path, Path]], Any]) -> None:
        self.pair = pair
        self.quic_config = quic_config
        self.reloads = 0
        self.failures = 0

    def __call__(self, server: ProxyServer, tcp: TcpListener | None) -> bool:
        """Load the pair again; True once both listeners use it, False (old pair kept) when it cannot be used."""
        cert, key = self.pair
        try:
            tls_context(cert, key)  # the same checks a TCP handshake would need, on a throwaway context
            config = self.quic_config(self.pair)
            digest = fingerprint(cert)
        except (OSError, ValueError, TypeError, ssl.SSLError) as error:
            self.failures += 1
            reason = getattr(error, "strerror", None) or getattr(error, "reason", None) or str(error)
            log.error("balancer.certificate_reload_failed", cert=str(cert), key=str(key), error=reason,
                      kept="the certificate in use")
            return False
        server.use_configuration(config)
        if tcp is not None:
            tcp.use_certificate(cert, key)
        self.reloads += 1
        log.info("balancer.certificate_reloaded", cert=str(cert), sha256=digest)
        return True
