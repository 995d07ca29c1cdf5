"""Readiness: a VM is `ready` only once a real HTTP/3 GET to its backend succeeds.

A running domain or a DHCP lease says nothing about the web server inside; the balancer would
send traffic into a black hole. Nor does an answer at the address say whose it is (a recycled
lease, a stale record): when the VM proves its identity, the answer must carry the domain's
UUID in `x-quicfleet-vm`, or it is a failure of its own kind. niquests speaks HTTP/3 (QUIC via
qh3) when HTTP/1.1 and HTTP/2 are disabled; it blocks, so the probe runs in a thread.
"""

from __future__ import annotations

import asyncio
import warnings
from dataclasses import dataclass
from pathlib import Path

import niquests
import structlog

from shared.contract.base import IDENTITY_HEADER

log = structlog.get_logger("provisioner.readiness")
IMPOSTOR = "answered as another VM"
"""The words every identity failure's reason carries (logs, `fleet.vm.failed`)."""


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

    async def __call__(self, address: str, uuid: str | None = None) -> str | None:
        """None when the backend answered with a 2xx/3xx over HTTP/3 (as `uuid`, when given), else why not."""
        return await asyncio.to_thread(self.check, address, uuid)

    def check(self, address: str, uuid: str | None = None) -> str | None:
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
        return None if uuid is None else _identity(url, uuid, response.headers.get(IDENTITY_HEADER))


def _identity(url: str, expected: str, seen: str | None) -> str | None:
    """None when the answer came from the VM expected at this address, else the mismatch in words."""
    if seen is not None and seen.strip().lower() == expected:
        return None
    shown = f"{IDENTITY_HEADER}: {seen[:64]}" if seen is not None else f"no {IDENTITY_HEADER} header"
    log.warning("readiness.identity_mismatch", url=url, expected=expected, seen=seen and seen[:64])
    return f"GET {url} {IMPOSTOR} ({shown}, expected {expected})"
