"""The CLI's NATS settings: `--nats-url` over QUICFLEET_* over the settings file's [common], then `up`'s login."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ops.cli.client import EXIT_ERROR, CliError, NatsSettings, cli_settings
from shared.settings import EXIT_BAD_SETTINGS

HOST_FILE = """
[common]
nats_url = "nats://10.0.0.1:4222"
nats_user = "ops"
nats_password = "hunter2"
subject_prefix = "blue"

[balancer]
listen_port = "not a port: the balancer's to refuse, not the CLI's"
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No QUICFLEET_* variable of the caller's, and a home of the test's own (no `up` login found by chance)."""
    for name in [n for n in os.environ if n.startswith("QUICFLEET_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def write(tmp_path: Path, text: str, name: str = "quicfleet.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def up_login(tmp_path: Path, port: int = 4222) -> None:
    """What `quicfleet up` leaves for this user: a pointer to the operator's password file."""
    password = tmp_path / "operator-password"
    password.write_text("secret\n")
    logins = tmp_path / "state" / "quicfleet" / "logins"
    logins.mkdir(parents=True)
    (logins / f"nats-{port}.json").write_text(json.dumps(
        {"user": "operator", "password_file": str(password), "inbox_prefix": "_INBOX_operator"}))


def test_the_files_common_section_is_enough_to_reach_nats(tmp_path: Path) -> None:
    """With no variable set, `--config FILE` gives the URL, login and subject prefix of its [common]."""
    settings = cli_settings(None, write(tmp_path, HOST_FILE), {})
    assert settings.nats_url == "nats://10.0.0.1:4222" and settings.subject_prefix == "blue"
    assert settings.nats_user == "ops" and settings.nats_password is not None
    assert settings.nats_password.get_secret_value() == "hunter2"


def test_quicfleet_config_names_the_file_as_the_flag_does(tmp_path: Path) -> None:
    """QUICFLEET_CONFIG is read like `--config`, and an empty one reads no file at all."""
    path = write(tmp_path, HOST_FILE)
    assert cli_settings(None, None, {"QUICFLEET_CONFIG": str(path)}).nats_url == "nats://10.0.0.1:4222"
    assert cli_settings(None, None, {"QUICFLEET_CONFIG": ""}).nats_url == "nats://127.0.0.1:4222"


def test_the_flag_beats_the_variable_which_beats_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--nats-url` over QUICFLEET_NATS_URL over the file's nats_url; the file's other keys still apply."""
    path = write(tmp_path, HOST_FILE)
    monkeypatch.setenv("QUICFLEET_NATS_URL", "nats://10.0.0.2:4222")
    assert cli_settings(None, path, {}).nats_url == "nats://10.0.0.2:4222"
    flagged = cli_settings("nats://10.0.0.3:4222", path, {})
    assert flagged.nats_url == "nats://10.0.0.3:4222" and flagged.subject_prefix == "blue"
    assert flagged.nats_user == "ops"


def test_ups_login_is_used_only_where_neither_variables_nor_the_file_name_one(tmp_path: Path) -> None:
    """A loopback URL with no login anywhere logs in as `up`'s operator; a login in the file wins over it."""
    up_login(tmp_path)
    home = {"XDG_STATE_HOME": str(tmp_path / "state")}
    found = cli_settings(None, write(tmp_path, '[common]\nnats_url = "nats://127.0.0.1:4222"\n', "bare.toml"), home)
    assert found.nats_user == "operator" and found.nats_inbox_prefix == "_INBOX_operator"
    own = cli_settings(None, write(tmp_path, '[common]\nnats_url = "nats://127.0.0.1:4222"\nnats_user = "me"\n'), home)
    assert own.nats_user == "me" and own.nats_password_file is None and own.nats_inbox_prefix == "_INBOX"


def test_a_mistake_in_common_is_a_settings_error_naming_its_place(tmp_path: Path) -> None:
    """An unknown key (with its close match) or a bad value in [common] stops the command with exit 2."""
    for text, expected in (('[common]\nnats_urll = "nats://x:1"\n', "[common] nats_urll: unknown setting "
                                                                    "(did you mean nats_url?)"),
                           ('[common]\nnats_url = "http://x:1"\n', "[common] nats_url: Value error")):
        with pytest.raises(CliError) as caught:
            cli_settings(None, write(tmp_path, text), {})
        assert caught.value.code == EXIT_BAD_SETTINGS != EXIT_ERROR
        assert expected in caught.value.message, caught.value.message


def test_a_bad_nats_url_flag_is_a_settings_error(tmp_path: Path) -> None:
    """`--nats-url http://…` is refused as the variable would be, naming it."""
    with pytest.raises(CliError) as caught:
        cli_settings("http://10.0.0.1", None, {"QUICFLEET_CONFIG": ""})
    assert caught.value.code == EXIT_BAD_SETTINGS and "QUICFLEET_NATS_URL" in caught.value.message


def test_settings_are_read_when_first_needed_and_once(tmp_path: Path) -> None:
    """A broken file does not stop a command that never connects; the first use raises, a good file is read once."""
    broken = NatsSettings(None, write(tmp_path, "[comon]\n", "broken.toml"))
    with pytest.raises(CliError, match=r"unknown section \[comon\] \(did you mean common\?\)"):
        broken.get()
    path = write(tmp_path, HOST_FILE)
    good = NatsSettings(None, path)
    first = good.get()
    path.write_text('[common]\nnats_url = "nats://10.9.9.9:4222"\n')
    assert good.get() is first
