"""The TOML settings file under the environment: precedence, and each kind of mistake named."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.balancer.settings import BalancerSettings
from services.scaler.settings import ScalerSettings
from shared.configfile import DEFAULT_CONFIG, config_path
from shared.settings import ServiceSettings, SettingsError, load_settings, unknown_variables

FILE = """
[common]
log_level = "debug"
nats_url = "nats://10.0.0.1:4222"

[balancer]
listen_port = 9443
log_level = "warning"

[scaler]
lease_ttl_s = 9.0
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "quicfleet.toml"
    path.write_text(text)
    return path


def test_a_section_overrides_common_and_other_sections_are_not_read(tmp_path: Path) -> None:
    """[balancer] beats [common] for the balancer; the shared settings read [common] only."""
    path = write(tmp_path, FILE)
    balancer = load_settings(BalancerSettings, path, {})
    common = load_settings(ServiceSettings, path, {})
    assert (balancer.listen_port, balancer.log_level, balancer.nats_url) == (9443, "warning", "nats://10.0.0.1:4222")
    assert common.log_level == "debug"
    assert load_settings(ScalerSettings, path, {}).lease_ttl_s == 9.0


def test_the_environment_itself_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real QUICFLEET_ variable in the process environment wins over the file's value."""
    monkeypatch.setenv("QUICFLEET_LISTEN_PORT", "7001")
    assert load_settings(BalancerSettings, write(tmp_path, FILE)).listen_port == 7001


def test_an_unknown_key_is_an_error_with_a_close_match(tmp_path: Path) -> None:
    """`listen_prot` in [balancer] stops the start, naming the file, section, key and `listen_port`."""
    path = write(tmp_path, "[balancer]\nlisten_prot = 9443\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(BalancerSettings, path, {})
    assert f"{path} [balancer] listen_prot: unknown setting (did you mean listen_port?)" in str(caught.value)


def test_a_service_setting_in_common_and_an_unknown_section_are_errors(tmp_path: Path) -> None:
    """[common] takes only the shared settings; [scalr] is no section; a key outside any section is refused."""
    for text, expected in [("[common]\nlisten_port = 1\n", "[common] listen_port: unknown setting"),
                           ("[scalr]\nlease_ttl_s = 1\n", "unknown section [scalr] (did you mean scaler?)"),
                           ("log_level = 'info'\n", "'log_level' is outside any section")]:
        with pytest.raises(SettingsError) as caught:
            load_settings(BalancerSettings, write(tmp_path, text), {})
        assert expected in str(caught.value)


def test_a_bad_value_in_the_file_names_the_file_and_key(tmp_path: Path) -> None:
    """A value the setting refuses is reported at its place in the file, not as a variable."""
    path = write(tmp_path, '[balancer]\nlisten_port = "https"\n')
    with pytest.raises(SettingsError) as caught:
        load_settings(BalancerSettings, path, {})
    assert f"{path} [balancer] listen_port: Input should be a valid integer" in str(caught.value)


def test_bad_toml_is_one_clear_error(tmp_path: Path) -> None:
    """A file that is not TOML stops the start with the parser's line and column."""
    with pytest.raises(SettingsError) as caught:
        load_settings(BalancerSettings, write(tmp_path, "[balancer\n"), {})
    assert "not valid TOML" in str(caught.value) and "line 1" in str(caught.value)


def test_the_file_is_found_by_flag_then_variable_then_default(tmp_path: Path) -> None:
    """--config wins over QUICFLEET_CONFIG, which wins over the default; an empty variable turns the file off."""
    flag, env = tmp_path / "a.toml", tmp_path / "b.toml"
    assert config_path(flag, {"QUICFLEET_CONFIG": str(env)}) == flag
    assert config_path(None, {"QUICFLEET_CONFIG": str(env)}) == env
    assert config_path(None, {"QUICFLEET_CONFIG": ""}) is None
    assert config_path(None, {}) == (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)


def test_a_misspelt_variable_is_named_with_its_close_match() -> None:
    """QUICFLEET_LISTEN_PROT is reported with QUICFLEET_LISTEN_PORT; tool variables and known ones are not."""
    environ = {"QUICFLEET_LISTEN_PROT": "9443", "QUICFLEET_LISTEN_PORT": "1", "QUICFLEET_CONFIG": "x",
               "QUICFLEET_BENCH_ROUNDS": "2", "QUICFLEET_ZZZ": "1", "PATH": "/bin"}
    lines = unknown_variables(environ, BalancerSettings.model_fields)
    assert lines == ["QUICFLEET_LISTEN_PROT is not a setting of any service (did you mean QUICFLEET_LISTEN_PORT?)",
                     "QUICFLEET_ZZZ is not a setting of any service"]
