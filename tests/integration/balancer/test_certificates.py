"""A balancer starts only with a usable certificate: half a configuration refuses to start with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from services.balancer.bootstrap import bootstrap
from services.balancer.settings import BalancerSettings
from shared.certs import CertificateError, make_self_signed

ROOT = Path(__file__).resolve().parents[3]


def _run(tmp_path: Path, extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m services.balancer` with only `extra` TLS variables (nothing else of ours set)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUICFLEET_")}
    env |= {"QUICFLEET_BALANCER_STATE_DIR": str(tmp_path / "state"), "QUICFLEET_NATS_URL": "nats://127.0.0.1:1"}
    return subprocess.run([sys.executable, "-m", "services.balancer"], cwd=ROOT, env=env | extra,
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_misspelt_key_variable_stops_the_start_with_one_line(tmp_path: Path) -> None:
    """QUICFLEET_TLS_CERT with the key under a wrong name exits 2 with one line naming QUICFLEET_TLS_KEY."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_self_signed(cert, key)
    done = _run(tmp_path, {"QUICFLEET_TLS_CERT": str(cert), "QUICFLEET_TLS_KEYFILE": str(key)})
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "QUICFLEET_TLS_KEY is not" in lines[0], done.stderr[-2000:]
    assert not (tmp_path / "state").exists(), "no development certificate was made"


def test_an_unreadable_key_stops_the_start_with_one_line(tmp_path: Path) -> None:
    """A key path that cannot be read exits 2 with one line saying the pair cannot be used."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_self_signed(cert, key)
    done = _run(tmp_path, {"QUICFLEET_TLS_CERT": str(cert), "QUICFLEET_TLS_KEY": str(tmp_path / "nokey.pem")})
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot be used" in lines[0], done.stderr[-2000:]


def test_bootstrap_refuses_a_certificate_without_its_key(tmp_path: Path) -> None:
    """The composition root refuses half a configuration too (for callers that skip `__main__`)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_self_signed(cert, key)
    with pytest.raises(CertificateError, match="QUICFLEET_TLS_KEY"):
        bootstrap(BalancerSettings(tls_cert=cert, balancer_state_dir=tmp_path / "state"))


async def test_the_development_certificate_is_logged_loudly_off_loopback(tmp_path: Path) -> None:
    """Without certificate and key the dev one is used: an info line on loopback, a warning on 0.0.0.0."""
    levels = {}
    for host in ("127.0.0.1", "0.0.0.0"):
        with capture_logs() as logs:
            bootstrap(BalancerSettings(listen_host=host, balancer_state_dir=tmp_path / "state"))
        levels[host] = [e["log_level"] for e in logs if e["event"] == "balancer.dev_certificate"]
    assert levels == {"127.0.0.1": ["info"], "0.0.0.0": ["warning"]}
