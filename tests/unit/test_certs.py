"""The certificate pair check: both or neither, and a pair that loads, else one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.certs import CertificateError, certificate_pair, check_pair, make_self_signed
from shared.settings import SettingsError


def _pair(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    make_self_signed(cert, key)
    return cert, key


def test_neither_set_means_the_development_pair(tmp_path: Path) -> None:
    """With no certificate and no key the check says so (None) and the dev pair is made in the state dir."""
    assert check_pair(None, None) is None
    cert, key = certificate_pair(None, None, tmp_path / "state")
    assert cert.parent == tmp_path / "state" and cert.exists() and key.exists()


def test_a_certificate_without_its_key_is_refused_naming_the_missing_variable(tmp_path: Path) -> None:
    """A certificate with no key (a misspelt key variable) is an error naming QUICFLEET_TLS_KEY, not a dev cert."""
    cert, _ = _pair(tmp_path)
    with pytest.raises(CertificateError, match="QUICFLEET_TLS_CERT is set but QUICFLEET_TLS_KEY is not"):
        certificate_pair(cert, None, tmp_path / "state")
    assert not (tmp_path / "state").exists(), "no development certificate was made"


def test_a_key_without_its_certificate_is_refused(tmp_path: Path) -> None:
    """A key alone is refused too, naming the certificate variable."""
    _, key = _pair(tmp_path)
    with pytest.raises(CertificateError, match="QUICFLEET_TLS_KEY is set but QUICFLEET_TLS_CERT is not"):
        check_pair(None, key)


def test_an_unreadable_or_mismatched_pair_is_refused_as_a_settings_error(tmp_path: Path) -> None:
    """A missing key file and a key of another certificate are each one settings error, not a traceback later."""
    cert, key = _pair(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, other_key = _pair(other)
    with pytest.raises(SettingsError, match="cannot be used"):
        check_pair(cert, tmp_path / "missing.pem")
    with pytest.raises(CertificateError, match="cannot be used"):
        check_pair(cert, other_key)
    assert check_pair(cert, key) == (cert, key)
