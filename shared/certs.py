"""TLS certificates of a server: the configured pair, checked at start, or a self-signed development pair.

The development pair lets HTTP/3 work before a real certificate exists; it is made only when
neither a certificate nor a key is configured (`check_pair` refuses half a configuration).
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.settings import SettingsError

DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")


def _san(names: tuple[str, ...]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def make_self_signed(cert_path: Path, key_path: Path, names: tuple[str, ...] = DEFAULT_NAMES, days: int = 365) -> None:
    """Write a self-signed ECDSA P-256 certificate and key (PEM) valid for `names`."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(_san(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)


def ensure_dev_certificate(directory: Path, names: tuple[str, ...] = DEFAULT_NAMES) -> tuple[Path, Path]:
    """Return (cert, key) in `directory`, generating them on first use."""
    cert, key = directory / "dev-cert.pem", directory / "dev-key.pem"
    if not (cert.exists() and key.exists()):
        make_self_signed(cert, key, names)
    return cert, key


class CertificateError(SettingsError):
    """A configured certificate or key that cannot be used; the message names the variable to fix."""


def check_pair(
    cert: Path | None, key: Path | None, names: tuple[str, str] = ("QUICFLEET_TLS_CERT", "QUICFLEET_TLS_KEY")
) -> tuple[Path, Path] | None:
    """The configured pair once it loads as one, None when neither is set; else `CertificateError`.

    Only "neither" may fall back to a development certificate: a certificate without its key
    (a misspelt key variable, say) must stop the start, not serve a self-signed certificate
    to clients who expect the real one. Loading the pair here also catches an unreadable file
    and a key that is not the certificate's, so the error is one line at start, not a traceback.
    """
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = (names[1], names[0]) if cert is None else names
        raise CertificateError(f"{given} is set but {missing} is not: give both, or neither for a dev certificate")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        reason = getattr(error, "strerror", None) or getattr(error, "reason", None) or str(error)
        raise CertificateError(f"{names[0]}={cert} with {names[1]}={key} cannot be used: {reason}") from None
    return cert, key


def certificate_pair(cert: Path | None, key: Path | None, state_dir: Path) -> tuple[Path, Path]:
    """The configured certificate and key, else (neither set) the development pair kept in `state_dir`."""
    return check_pair(cert, key) or ensure_dev_certificate(state_dir)
