"""A throwaway certificate authority for tests of certificate verification towards VMs.

`make_ca` writes a CA certificate and one VM certificate it signed (for a DNS name and
127.0.0.1), so a test can check that the balancer trusts the VM with the CA file and refuses it
without. The VM pair is written under the names `shared.certs.ensure_dev_certificate` looks
for, so a test HTTP/3 backend given the same directory serves it.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VM_NAME = "vm.quicfleet.test"


@dataclass(frozen=True)
class CaFiles:
    """Paths of the CA bundle and of the VM's certificate and key (PEM)."""

    ca_file: Path
    cert: Path
    key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _builder(subject: str, issuer: str, public: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer)).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def _usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False,
    )


def make_ca(directory: Path) -> CaFiles:
    """Write `ca.pem` and a VM pair signed by it (`dev-cert.pem`, `dev-key.pem`) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, vm_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        _builder("quicfleet test CA", "quicfleet test CA", ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    names = [x509.DNSName(VM_NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    vm = (
        _builder(VM_NAME, "quicfleet test CA", vm_key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    made = CaFiles(directory / "ca.pem", directory / "dev-cert.pem", directory / "dev-key.pem")
    made.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    made.cert.write_bytes(vm.public_bytes(serialization.Encoding.PEM))
    pkcs8 = serialization.PrivateFormat.PKCS8
    made.key.write_bytes(vm_key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption()))
    return made
