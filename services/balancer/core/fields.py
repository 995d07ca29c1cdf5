"""The grammar of one HTTP field, shared by every front, engine and upstream (RFC 9110 §5).

Requests (`core.request`) and responses from VMs are checked against the same two rules, so a
byte that one side refuses can never be let through by the other:

- a field name is a `token` (RFC 9110 §5.6.2): visible ASCII without delimiters; HTTP/2 and
  HTTP/3 also require it lower-case (RFC 9113 §8.2.1, RFC 9114 §4.2), which the fronts ask for;
- a field value has no CR, LF or NUL and no other control character but HTAB (RFC 9110 §5.5,
  RFC 9113 §8.2.1), and no leading or trailing whitespace once it is on the wire.

Both are a single compiled regular expression each: the request path pays one C-level scan per
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


def valid_name(name: bytes, lower: bool = True) -> bool:
    """Whether `name` is a field name the balancer forwards (lower-case unless `lower` is False)."""
    return (LOWER_TOKEN if lower else TOKEN).fullmatch(name) is not None


def valid_value(value: bytes) -> bool:
    """Whether `value` is a field value with nothing that could split or end a header line."""
    return VALUE.fullmatch(value) is not None


def valid_token(value: bytes) -> bool:
    """Whether `value` is a non-empty token (a method, a transfer coding's name)."""
    return TOKEN.fullmatch(value) is not None
