"""SIGHUP re-reads the certificate: new connections get the new one, open ones go on, a bad pair is refused."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from services.balancer.process.certreload import fingerprint
from shared.bus import Bus
from shared.certs import make_self_signed
from tests.integration.balancer.admin import Http1
from tests.integration.balancer.h3client import h3_client
from tests.integration.balancer.harness import list_as_provisioner
from tests.integration.balancer.processes import Fleet, process_env
from tests.support import wait_until
from tests.support.h1server import H1Backend


def _renew(directory: Path, cert: Path, key: Path, name: str) -> str:
    """Write a new pair over `cert` and `key` as a deploy hook does (write aside, then rename); its fingerprint."""
    new_cert, new_key = directory / f"{name}.crt.new", directory / f"{name}.key.new"
    make_self_signed(new_cert, new_key, (name, "127.0.0.1"))
    os.replace(new_key, key)
    os.replace(new_cert, cert)
    return fingerprint(cert)


async def _tcp_fingerprint(port: int) -> str:
    client = await Http1.open(port)
    try:
        return client.fingerprint
    finally:
        await client.close()


async def _sees(port: int, wanted: str) -> bool:
    return await _tcp_fingerprint(port) == wanted


def _quic_fingerprint(client: object) -> str:
    certificate = client._quic.tls._peer_certificate  # type: ignore[attr-defined]
    return hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()


async def test_sighup_serves_the_renewed_certificate_to_new_connections_only(
    bus: Bus, settings_env: dict[str, str], tmp_path: Path
) -> None:
    """After SIGHUP a new TCP and a new QUIC connection see the new certificate; connections opened before it keep
    answering; then a certificate with the wrong key is refused with a log line and the good one stays."""
    tls = tmp_path / "tls"
    cert, key = tls / "cert.pem", tls / "key.pem"
    make_self_signed(cert, key, ("old.test", "127.0.0.1"))
    old = fingerprint(cert)
    log = tmp_path / "balancer.log"
    env = process_env(settings_env, tmp_path) | {"QUICFLEET_TLS_CERT": str(cert), "QUICFLEET_TLS_KEY": str(key),
                                                  "QUICFLEET_LOG_LEVEL": "info"}
    async with H1Backend() as backend:
        await list_as_provisioner(bus, "vm-1", backend.address)
        fleet = Fleet(bus, env)
        await fleet.listen()
        with log.open("wb") as out:
            proc, port = await fleet.start(0, log=out)
            try:
                open_tcp = await Http1.open(port)
                assert open_tcp.fingerprint == old and (await open_tcp.get())[0] == 200
                async with h3_client(port) as open_quic:
                    assert _quic_fingerprint(open_quic) == old
                    assert (await open_quic.get("/")).status == 200
                    new = _renew(tls, cert, key, "new.test")
                    proc.send_signal(signal.SIGHUP)
                    await wait_until(lambda: _sees(port, new), timeout=10, what="the new certificate on TCP")
                    async with h3_client(port) as fresh_quic:
                        assert _quic_fingerprint(fresh_quic) == new
                        assert (await fresh_quic.get("/")).status == 200
                    assert (await open_tcp.get())[0] == 200, "a connection opened before the reload still answers"
                    assert (await open_quic.get("/")).status == 200
                    assert proc.poll() is None
                make_self_signed(tls / "other.crt", tls / "other.key", ("other.test",))
                os.replace(tls / "other.crt", cert)  # a certificate whose key is not the one at `key`
                proc.send_signal(signal.SIGHUP)
                await wait_until(lambda: b"certificate_reload_failed" in log.read_bytes(), timeout=10,
                                 what="the refusal logged")
                assert await _tcp_fingerprint(port) == new, "the pair in use stays after a bad one"
                assert proc.poll() is None
                await open_tcp.close()
            finally:
                proc.send_signal(signal.SIGTERM)
                code = await asyncio.to_thread(proc.wait, 30)
                fleet.kill_all()
    assert code == 0

