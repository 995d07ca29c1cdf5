"""The grammar of one HTTP field, shared by every front, engine and upstream (RFC 9110 §5).

Requests (`core.request`) and responses from VMs are checked against the same two rules, so a
byte that one side refuses can never be let through by the other:

- a field name is a `token` (RFC 9110 §5.6.2): visible ASCII without delimiters; HTTP/2 and
  HTTP/3 also require it lower-case (RFC 9113 §8.2.1, RFC 9114 §4.2), which the fronts ask for;
- a field value has no CR, LF or NUL and no other control character but HTAB (RFC 9110 §5.5,
  RFC 9113 §8.2.1), and no leading or trailing whitespace once it is on the wire.

An authority (`:authority`, `host`, the `host=` of `forwarded`) is host[:port] (RFC 9110 §7.2,
RFC 3986 §3.2): a reg-name, an IPv4 address or a bracketed IPv6 literal, no userinfo.

Each is a single compiled regular expression: the request path pays one C-level scan per
field, not a Python loop per byte.
"""

from __future__ import annotations

import re

TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""RFC 9110 §5.6.2 `token`: what a field name and a method are made of."""
LOWER_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
"""A token with no upper-case letter: a field name as HTTP/2 and HTTP/3 require it."""
VALUE = re.compile(rb"(?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?")
"""RFC 9110 §5.5 `field-value`: visible bytes (obs-text allowed) with inner spaces and tabs, no control
character, no leading or trailing whitespace."""


NAMES = re.compile(rb"%s(?:\n%s)*" % (LOWER_TOKEN.pattern, LOWER_TOKEN.pattern))
ANY_CASE_NAMES = re.compile(rb"%s(?:\n%s)*" % (TOKEN.pattern, TOKEN.pattern))
VALUES = re.compile(rb"%s(?:\n%s)*" % (VALUE.pattern, VALUE.pattern))
"""Every name (value) of a block joined by LF: one scan of the whole block per grammar (see `all_match`)."""


def all_match(pattern: re.Pattern[bytes], items: list[bytes]) -> bool:
    """Whether each item fits the grammar `pattern` repeats, joined by LF. LF is in no valid item, and
    an LF inside an item shows as one separator too many, so the count tells the two apart."""
    if not items:
        return True
    joined = b"\n".join(items)
    return joined.count(b"\n") == len(items) - 1 and pattern.fullmatch(joined) is not None


def valid_name(name: bytes, lower: bool = True) -> bool:
    """Whether `name` is a field name the balancer forwards (lower-case unless `lower` is False)."""
    return (LOWER_TOKEN if lower else TOKEN).fullmatch(name) is not None


def valid_value(value: bytes) -> bool:
    """Whether `value` is a field value with nothing that could split or end a header line."""
    return VALUE.fullmatch(value) is not None


def valid_token(value: bytes) -> bool:
    """Whether `value` is a non-empty token (a method, a transfer coding's name)."""
    return TOKEN.fullmatch(value) is not None


AUTHORITY = re.compile(
    rb"(?:(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+"  # reg-name or IPv4 (RFC 3986 §3.2.2)
    rb"|\[[0-9A-Fa-f:.]{2,45}\])"  # an IPv6 literal (IPvFuture is not taken)
    rb"(?::(?P<port>[0-9]{1,5}))?"
)
"""host[:port]: no userinfo (`@` is no reg-name character), no empty host or port, no space or quote."""


def valid_authority(authority: bytes) -> bool:
    """Whether `authority` is host[:port]: a reg-name, IPv4 or [IPv6] and a port of at most 65535, no userinfo."""
    match = AUTHORITY.fullmatch(authority)
    return match is not None and (match["port"] is None or int(match["port"]) <= 65535)
