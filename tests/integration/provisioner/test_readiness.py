"""The readiness probe against real HTTP/3 servers on loopback: status, TLS verification, silence."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.provisioner.readiness import ReadinessProbe
from tests.support.h3server import H3Backend


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _issue_pair(workdir: Path) -> Path:
    """A CA (written to ca.pem) and a 127.0.0.1 leaf it signed, where H3Backend looks for its cert."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("test ca")).issuer_name(_name("test ca"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
        .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "dev-cert.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (workdir / "dev-key.pem").write_bytes(
        leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
    )
    (workdir / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return workdir / "ca.pem"


async def test_verified_probe_accepts_a_backend_signed_by_the_configured_ca(tmp_path: Path) -> None:
    """With the CA file set, a backend whose certificate that CA signed is ready, over HTTP/3, on the path."""
    ca = _issue_pair(tmp_path / "good")
    async with H3Backend(tmp_path / "good") as backend:
        reason = await ReadinessProbe(path="/healthz", ca_file=ca)(backend.address)
    assert reason is None
    assert backend.paths == ["/healthz"]


async def test_verified_probe_refuses_a_certificate_from_another_ca(tmp_path: Path) -> None:
    """A backend whose certificate the configured CA did not sign is not ready, and the reason says TLS."""
    other_ca = _issue_pair(tmp_path / "other")
    _issue_pair(tmp_path / "server")
    async with H3Backend(tmp_path / "server") as backend:
        reason = await ReadinessProbe(ca_file=other_ca, timeout_s=2)(backend.address)
    assert reason is not None and "SSLError" in reason


async def test_error_status_and_silence_are_not_ready(tmp_path: Path) -> None:
    """A 503 answer and a port where nothing listens both give a reason instead of readiness."""
    async with H3Backend(tmp_path, status=503) as backend:
        unhealthy = await ReadinessProbe(timeout_s=2)(backend.address)
        address = backend.address
    silent = await ReadinessProbe(timeout_s=1)(address)
    assert unhealthy is not None and unhealthy.endswith("answered 503")
    assert silent is not None and silent.startswith(f"GET https://{address}/ failed")
