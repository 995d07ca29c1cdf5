"""Credentials out of every message: a URL's password or token is printed as `***`.

NATS URLs may carry `user:password@` or `token@`; an error that echoes the URL (cannot reach
nats://svc:hunter2@nats:4222) would otherwise put the password in a terminal, a journal and a
CI log. The CLI's one-line errors and every log line pass through `mask_credentials`.
"""

from __future__ import annotations

import re
from typing import Any

_USER_PASSWORD = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]+@", re.IGNORECASE)
_TOKEN = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^:/@\s]+@", re.IGNORECASE)
MASK = "***"


def mask_credentials(text: str) -> str:
    """`nats://user:secret@host` -> `nats://user:***@host`; `nats://token@host` -> `nats://***@host`."""
    if "://" not in text or "@" not in text:
        return text
    text = _USER_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _TOKEN.sub(lambda m: f"{m['scheme']}{MASK}@", text)


def mask_event(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: mask credentials in every string value of a log line."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = mask_credentials(value)
    return event
