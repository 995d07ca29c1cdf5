"""The grammar of one field (core.fields): names, values, tokens and authorities, accepted and refused."""

from __future__ import annotations

import pytest

from services.balancer.core.fields import valid_authority, valid_name, valid_token, valid_value

CONTROLS = [bytes([c]) for c in [*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F]]
"""Every control character but HTAB."""


@pytest.mark.parametrize("name", [b"accept", b"x-a_b.c", b"!#$%&'*+-.^_`|~09az"])
def test_lower_case_tokens_are_names(name: bytes) -> None:
    """A lower-case token is a field name."""
    assert valid_name(name)


@pytest.mark.parametrize("name", [b"", b"Accept", b"x a", b"x:a", b"x\r\n", b"x\x00", b'x"', b"x(", b"\xff"])
def test_other_bytes_are_no_names(name: bytes) -> None:
    """Empty, upper-case, delimiters, controls and non-ASCII are no field name."""
    assert not valid_name(name)


def test_upper_case_names_pass_when_asked() -> None:
    """With lower=False an upper-case token is a name (HTTP/1.1 names are case-insensitive)."""
    assert valid_name(b"Accept", lower=False) and not valid_name(b"Acc ept", lower=False)


@pytest.mark.parametrize("value", [b"", b"a", b"a b", b"a\tb", b"\x80\xff", b"x=\"q\"; y"])
def test_visible_bytes_with_inner_whitespace_are_values(value: bytes) -> None:
    """Visible bytes, obs-text and inner spaces or tabs make a field value."""
    assert valid_value(value)


@pytest.mark.parametrize("control", CONTROLS, ids=[c.hex() for c in CONTROLS])
def test_no_control_character_is_in_a_value(control: bytes) -> None:
    """Each control character (CR, LF and NUL among them) makes a value invalid, wherever it sits."""
    assert not any(valid_value(v) for v in (control, b"a" + control, control + b"a", b"a" + control + b"b"))


@pytest.mark.parametrize("value", [b" a", b"a ", b"\ta", b"a\t", b" "])
def test_surrounding_whitespace_is_refused(value: bytes) -> None:
    """Leading or trailing whitespace is not part of a value on the wire."""
    assert not valid_value(value)


def test_tokens() -> None:
    """A token is one or more tchar: methods and coding names."""
    assert valid_token(b"GET") and valid_token(b"chunked")
    assert not any(valid_token(t) for t in (b"", b"GET /", b"a,b", b"a\r"))


@pytest.mark.parametrize("authority", [
    b"a", b"example.org", b"example.org:443", b"192.0.2.1", b"192.0.2.1:0", b"[::1]", b"[2001:db8::1]:65535",
    b"ex%41mple", b"a-b_c~d!$&'()*+,;=",
])
def test_valid_authorities(authority: bytes) -> None:
    """reg-names, IPv4 and bracketed IPv6 with an optional port up to 65535 are authorities."""
    assert valid_authority(authority)


@pytest.mark.parametrize("authority", [
    b"", b"u@a", b"u:p@a", b"a:", b"a:65536", b"a:99999", b"a:-1", b"a:+1", b"::1", b"[::1", b"a b", b'a"b', b"a/b",
    b"a?b", b"a#b", b"a\\b", b"a\r\nb", b"a\x00", b"%4", b"%zz", b"\xff", b"[v1.x]", b"a:1:2",
])
def test_invalid_authorities(authority: bytes) -> None:
    """Userinfo, bad or out-of-range ports, bare IPv6, delimiters, controls and bad escapes are refused."""
    assert not valid_authority(authority)
