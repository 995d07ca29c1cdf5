"""Readiness: a VM is `ready` only once a real HTTP/3 GET to its backend succeeds.

A running domain or a DHCP lease says nothing about the web server inside; the balancer would
send traffic into a black hole. niquests speaks HTTP/3 (QUIC via qh3) when HTTP/1.1 and HTTP/2
are disabled; it blocks, so the probe runs in a thread.
"""

from __future__ import annotations

import asyncio
import warnings
from dataclasses import dataclass
from pathlib import Path

import niquests


@dataclass(frozen=True)
class ReadinessProbe:
    """GET https://<address><path> over HTTP/3; verification per settings."""

    path: str = "/"
    verify_tls: bool = False
    ca_file: Path | None = None
    timeout_s: float = 3.0

    def __post_init__(self) -> None:
        if self.verify is False:
            # verification is off on purpose (self-signed template): one warning per probe is noise
            warnings.filterwarnings("ignore", message="Unverified HTTPS request")

    @property
    def verify(self) -> bool | str:
        if self.ca_file is not None:
            return str(self.ca_file)
        return self.verify_tls

    async def __call__(self, address: str) -> str | None:
        """None when the backend answered with a 2xx/3xx over HTTP/3, else why not (in words)."""
        return await asyncio.to_thread(self.check, address)

    def check(self, address: str) -> str | None:
        url = f"https://{address}{self.path}"
        try:
            with niquests.Session(disable_http1=True, disable_http2=True) as session:
                response = session.get(url, verify=self.verify, timeout=self.timeout_s, allow_redirects=False)
        except Exception as error:  # noqa: BLE001 - any client failure means "not ready yet"
            detail = str(error)[:200]
            shown = f": {detail}" if detail and detail != "None" else ""
            return f"GET {url} failed: {type(error).__name__}{shown}"
        if response.http_version != 30:
            return f"GET {url} was not answered over HTTP/3 (version {response.http_version})"
        status = response.status_code or 0
        if not 200 <= status < 400:
            return f"GET {url} answered {status}"
        return None
