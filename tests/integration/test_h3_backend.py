"""The test HTTP/3 backend answers real HTTP/3 clients over UDP on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import niquests

from tests.support.h3server import H3Backend


def _get(url: str) -> niquests.Response:
    with niquests.Session(disable_http1=True, disable_http2=True) as session:
        return session.get(url, verify=False, timeout=5)


async def test_backend_answers_niquests_over_http3(tmp_path: Path) -> None:
    """A niquests GET (HTTP/3 forced) gets `Server Address: <ip>:<port>` with Alt-Svc."""
    async with H3Backend(tmp_path) as backend:
        response = await asyncio.to_thread(_get, f"https://{backend.address}/")
    assert response.http_version == 30
    assert (response.text or "").strip() == f"Server Address: {backend.address}"
    assert response.headers["alt-svc"] == f'h3=":{backend.port}"'
    assert backend.requests == 1
