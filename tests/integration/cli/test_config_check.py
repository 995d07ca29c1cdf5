"""`quicfleet config check`, `--version`, one-line usage errors and masked credentials, as a real subprocess."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.integration.cli.support import Result

ROOT = Path(__file__).resolve().parents[3]
GOOD = """
[common]
nats_url = "nats://127.0.0.1:4222"
nats_password = "hunter2"
nats_user = "ops"

[balancer]
listen_port = 9443
"""


async def quicfleet(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run `python -m ops.cli args…` with only the given QUICFLEET_* variables set."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("QUICFLEET_")} | {"COLUMNS": "200"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ops.cli", *args, env=base | (env or {}), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "quicfleet.toml"
    path.write_text(text)
    return str(path)


async def test_a_good_file_prints_the_effective_settings_with_secrets_masked(tmp_path: Path) -> None:
    """Exit 0, the file's values under each section, the password as ***, and `configuration ok`."""
    result = await quicfleet("config", "check", "--config", config(tmp_path, GOOD))
    assert result.code == 0, result.err
    assert "[balancer]\n" in result.out and "listen_port = 9443" in result.out
    assert 'nats_password = "***"' in result.out and "hunter2" not in result.out + result.err
    assert "configuration ok" in result.err


async def test_each_kind_of_mistake_exits_2_naming_it(tmp_path: Path) -> None:
    """Unknown key, misspelt variable, bad value and a certificate without its key: each one line, exit 2."""
    cert = tmp_path / "cert.pem"
    cert.write_text("not used")
    cases = [
        ({}, "[balancer]\nlisten_prot = 1\n", "[balancer] listen_prot: unknown setting (did you mean listen_port?)"),
        ({"QUICFLEET_LISTEN_PROT": "9443"}, GOOD,
         "QUICFLEET_LISTEN_PROT is not a setting of any service (did you mean QUICFLEET_LISTEN_PORT?)"),
        ({}, '[balancer]\nlisten_port = "https"\n', "[balancer] listen_port: Input should be a valid integer"),
        ({"QUICFLEET_LISTEN_PORT": "99999"}, GOOD, "QUICFLEET_LISTEN_PORT: Input should be less than or equal to"),
        ({"QUICFLEET_TLS_CERT": str(cert)}, GOOD, "QUICFLEET_TLS_CERT is set but QUICFLEET_TLS_KEY is not"),
    ]
    for env, text, expected in cases:
        result = await quicfleet("config", "check", "--service", "balancer", "--config", config(tmp_path, text),
                                 env=env)
        assert result.code == 2, (expected, result.err)
        assert expected in result.err, result.err


async def test_version_usage_errors_and_masked_urls() -> None:
    """--version prints the release; a bad option is one line (no box); a NATS password never shows."""
    version = await quicfleet("--version")
    usage = await quicfleet("status", "--bogus")
    masked = await quicfleet("--nats-url", "nats://ops:hunter2@127.0.0.1:1", "--timeout", "1", "status")
    assert version.code == 0 and version.out.startswith("quicfleet ") and version.out.strip() != "quicfleet"
    assert usage.code == 2 and usage.err.strip().count("\n") == 0 and "No such option: --bogus" in usage.err
    assert "╭" not in usage.err
    assert masked.code == 3 and "nats://ops:***@127.0.0.1:1" in masked.err and "hunter2" not in masked.err
