"""The CLI on a host: NATS and its login from the settings file the services read, with no QUICFLEET_* variable.

A real nats-server with authorisation on (the users `quicfleet up` makes) and a stand-in scaler logged in as
`scaler`; the CLI runs as a subprocess with a clean environment and only a TOML file naming NATS and the
operator's login, as an operator of a host with /etc/quicfleet/quicfleet.toml would.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.cli.client import CliError, cli_settings
from ops.natsauth import OPERATOR, Auth, prepare
from ops.natsserver import NatsServer
from shared import configfile
from shared.contract.subjects import Subjects
from shared.settings import ServiceSettings
from tests.integration.cli.support import Result, ScriptedFleet
from tests.support.as_user import as_user

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[NatsServer, Auth]]:
    """A nats-server running the generated users (bcrypt hashes, per-role permissions)."""
    auth = prepare(tmp_path / "nats-auth", Subjects())
    (tmp_path / "nats").mkdir()
    server = NatsServer(tmp_path / "nats", extra=auth.server_block)
    server.start()
    yield server, auth
    server.stop()


def host_file(path: Path, server: NatsServer, auth: Auth) -> Path:
    """The [common] an operator writes: the URL and the operator's user, password file and reply prefix."""
    login = auth.env(OPERATOR)
    path.write_text(f"""[common]
nats_url = "{server.url}"
nats_user = "{login['QUICFLEET_NATS_USER']}"
nats_password_file = "{login['QUICFLEET_NATS_PASSWORD_FILE']}"
nats_inbox_prefix = "{login['QUICFLEET_NATS_INBOX_PREFIX']}"

[balancer]
listen_port = 9443
""")
    return path


async def quicfleet(*args: str, env: dict[str, str], home: Path) -> Result:
    """`python -m ops.cli args…` with no QUICFLEET_* variable but those in `env`, and a home with no `up` login."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("QUICFLEET_")}
    base |= {"COLUMNS": "200", "HOME": str(home), "XDG_STATE_HOME": str(home / "state")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ops.cli", *args, env=base | env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


async def test_status_reaches_an_authorised_nats_named_only_by_the_file(
    secured: tuple[NatsServer, Auth], tmp_path: Path
) -> None:
    """`--config FILE status` and `QUICFLEET_CONFIG=FILE status` log in from the file; without it NATS refuses."""
    server, auth = secured
    config = host_file(tmp_path / "quicfleet.toml", server, auth)
    scaler = auth.env("scaler")
    fleet = ServiceSettings(nats_url=server.url, nats_user=scaler["QUICFLEET_NATS_USER"],
                            nats_password_file=Path(scaler["QUICFLEET_NATS_PASSWORD_FILE"]),
                            nats_inbox_prefix=scaler["QUICFLEET_NATS_INBOX_PREFIX"])
    async with ScriptedFleet(fleet):
        flag = await quicfleet("--config", str(config), "--json", "status", env={}, home=tmp_path)
        variable = await quicfleet("--json", "status", env={"QUICFLEET_CONFIG": str(config)}, home=tmp_path)
        bare = await quicfleet("--timeout", "2", "--nats-url", server.url, "status", env={"QUICFLEET_CONFIG": ""},
                               home=tmp_path)
    for result in (flag, variable):
        assert result.code == 0, result.err
        assert json.loads(result.out)["desired"] == 0
    assert bare.code == 3, bare  # the same NATS refuses a client with no login


async def test_config_check_reports_a_bad_common_section_itself(tmp_path: Path) -> None:
    """`quicfleet --config FILE config check` checks that FILE, and a mistake in [common] reaches the check's own
    report (every line, exit 2) instead of stopping the CLI before it runs."""
    config = tmp_path / "quicfleet.toml"
    config.write_text('[common]\nnats_urll = "nats://127.0.0.1:4222"\n\n[balancer]\nlisten_prot = 1\n')
    result = await quicfleet("--config", str(config), "config", "check", env={}, home=tmp_path)
    assert result.code == 2, result
    assert f"# file: {config}" in result.out
    assert "[common] nats_urll: unknown setting (did you mean nats_url?)" in result.err
    assert "[balancer] listen_prot: unknown setting (did you mean listen_port?)" in result.err


def test_a_default_file_the_operator_may_not_read_is_named_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """For a user outside the group of /etc/quicfleet (0750), the default file behind it is still found, and the
    CLI's settings fail with exit 2 saying it cannot be read and how to go on, rather than falling back to the
    default NATS without a login. (In a child that became `nobody`: the venv's python is not theirs to run.)"""
    top = Path(tempfile.mkdtemp(prefix="quicfleet-cli-", dir="/var/tmp"))  # pytest's tmp_path is root's only
    try:
        top.chmod(0o755)
        private = top / "etc-quicfleet"
        private.mkdir(mode=0o750)
        (private / "quicfleet.toml").write_text('[common]\nnats_url = "nats://127.0.0.1:4222"\n')
        monkeypatch.setattr(configfile, "DEFAULT_CONFIG", private / "quicfleet.toml")

        def settings_refused() -> None:
            assert configfile.config_path(None, {}) == private / "quicfleet.toml"
            try:
                cli_settings(None, None, {})
            except CliError as error:
                assert error.code == 2, error.code
                assert "quicfleet.toml: cannot read: Permission denied" in error.message, error.message
                assert "member of group quicfleet" in error.message and "QUICFLEET_CONFIG=" in error.message
                return
            raise AssertionError("settings were read from a file this user may not read")

        with as_user(settings_refused) as outcome:
            assert outcome == "ok", outcome
    finally:
        shutil.rmtree(top, ignore_errors=True)
