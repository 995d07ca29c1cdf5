"""How the CLI finds `up`'s operator login with no flag (ops.cli.login), and how `up` hands services theirs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.cli.login import discover, leave, login_dir, loopback_port, withdraw
from ops.natsauth import prepare
from ops.stack.plan import Mode, Plan, service_env, with_login
from shared.contract.subjects import Subjects


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """An environment whose state directory is the test's own."""
    return {"XDG_STATE_HOME": str(tmp_path / "state")}


def test_only_loopback_urls_name_a_port() -> None:
    """A login made for this machine's `up` is only ever offered to a loopback URL without its own user."""
    assert loopback_port("nats://127.0.0.1:4222,nats://127.0.0.1:4223") == 4222
    assert loopback_port("nats://localhost") == 4222
    assert loopback_port("nats://nats.example.net:4222") is None
    assert loopback_port("nats://me:pw@127.0.0.1:4222") is None


def test_the_cli_finds_the_operator_login_up_left(tmp_path: Path, home: dict[str, str]) -> None:
    """After `up` leaves its pointer, a CLI on that port logs in as the operator with the run's password file."""
    auth = prepare(tmp_path / "run" / "nats-auth", Subjects())
    leave([4300], auth.directory, home)
    found = discover("nats://127.0.0.1:4300", home)
    assert found == {"nats_user": "operator", "nats_password_file": str(auth.directory / "operator" / "password"),
                     "nats_inbox_prefix": "_INBOX_operator"}
    assert "password" not in json.loads((login_dir(home) / "nats-4300.json").read_text()).get("user", "")
    assert discover("nats://127.0.0.1:4301", home) == {}


def test_explicit_settings_win_and_a_stale_pointer_is_ignored(tmp_path: Path, home: dict[str, str]) -> None:
    """QUICFLEET_NATS_USER (or a token, creds) set by the user turns discovery off; a pointer to a deleted run is
    ignored; `up` withdraws only its own pointer."""
    auth = prepare(tmp_path / "nats-auth", Subjects())
    leave([4400], auth.directory, home)
    assert discover("nats://127.0.0.1:4400", home | {"QUICFLEET_NATS_USER": "me"}) == {}
    assert discover("nats://127.0.0.1:4400", home | {"QUICFLEET_NATS_TOKEN": "t"}) == {}
    withdraw([4400], tmp_path / "another-run", home)
    assert (login_dir(home) / "nats-4400.json").exists()
    (auth.directory / "operator" / "password").unlink()
    assert discover("nats://127.0.0.1:4400", home) == {}
    withdraw([4400], auth.directory, home)
    assert not (login_dir(home) / "nats-4400.json").exists()


def test_a_service_gets_its_own_login_instead_of_the_callers(tmp_path: Path) -> None:
    """With authorisation on, `up` drops the caller's NATS login variables and gives each service its own user."""
    auth = prepare(tmp_path, Subjects())
    base = {"QUICFLEET_NATS_USER": "me", "QUICFLEET_NATS_PASSWORD": "mine", "QUICFLEET_LOG_LEVEL": "debug"}
    env = service_env(base, "metrics", "nats://127.0.0.1:4222", Plan(Mode.TEST), tty=False, login=auth.env("metrics"))
    assert env["QUICFLEET_NATS_USER"] == "metrics" and "QUICFLEET_NATS_PASSWORD" not in env
    assert env["QUICFLEET_NATS_PASSWORD_FILE"].endswith("metrics/password") and env["QUICFLEET_LOG_LEVEL"] == "debug"
    assert with_login(base, None) == base, "with authorisation off the caller's login passes through"
