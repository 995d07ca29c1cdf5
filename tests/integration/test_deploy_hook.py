"""The certificate deploy hook copies the renewed pair into place and sends SIGHUP to the balancer units."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from shared.certs import make_self_signed

HOOK = Path(__file__).resolve().parents[2] / "deploy" / "certbot-deploy-hook.sh"


@pytest.mark.skipif(os.geteuid() != 0, reason="the hook installs files owned by root")
def test_the_hook_installs_certbots_pair_and_signals_every_balancer(tmp_path: Path) -> None:
    """Given certbot's RENEWED_LINEAGE, the pair lands as fullchain.pem/privkey.pem (key 0640) and
    `systemctl kill -s HUP 'quicfleet-balancer@*'` runs once."""
    lineage, dest, bin_dir = tmp_path / "live", tmp_path / "tls", tmp_path / "bin"
    lineage.mkdir()
    bin_dir.mkdir()
    make_self_signed(lineage / "fullchain.pem", lineage / "privkey.pem")
    calls = tmp_path / "systemctl.calls"
    stub = bin_dir / "systemctl"  # stands in for systemd, which does not run here
    stub.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    stub.chmod(0o755)
    env = os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}", "RENEWED_LINEAGE": str(lineage),
                        "QUICFLEET_TLS_DIR": str(dest)}
    done = subprocess.run(["sh", str(HOOK)], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert (dest / "fullchain.pem").read_bytes() == (lineage / "fullchain.pem").read_bytes()
    assert (dest / "privkey.pem").read_bytes() == (lineage / "privkey.pem").read_bytes()
    assert stat.S_IMODE((dest / "privkey.pem").stat().st_mode) == 0o640
    assert calls.read_text().splitlines() == ["kill -s HUP quicfleet-balancer@*"]


def test_the_hook_without_a_pair_says_how_to_call_it(tmp_path: Path) -> None:
    """Run with no arguments and no certbot or lego variables, it exits 2 with its usage line."""
    env = {k: v for k, v in os.environ.items() if k not in ("RENEWED_LINEAGE", "LEGO_CERT_PATH")}
    done = subprocess.run(["sh", str(HOOK)], env=env | {"QUICFLEET_TLS_DIR": str(tmp_path / "tls")},
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2 and "usage:" in done.stderr
