"""Request ids: the one place the proxy draws randomness for a request (the core takes the result)."""

from __future__ import annotations

import os


def new_request_id() -> bytes:
    """A fresh request id: 128 random bits as 32 hex digits (os.urandom: ~0.4 us, unguessable)."""
    return os.urandom(16).hex().encode()
