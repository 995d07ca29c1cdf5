"""Debian's headless Chromium driven over its DevTools protocol (a websocket on loopback).

One browser process keeps its network state (connections, the Alt-Svc cache) between page
loads, which is what a test of protocol upgrades needs; `--dump-dom` runs start afresh each time.
Commands are sent one at a time and events are not enabled, so the reader is a plain loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import os
import shutil
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support import wait_until

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
"""LAB.md's flags for headless Chromium here, plus DevTools on a free loopback port."""


def chromium_binary() -> str:
    """Debian's chromium, or a loud skip (a failure in CI, where it must be installed)."""
    path = shutil.which("chromium")
    if path is None:
        reason = "chromium is not installed: `apt-get install chromium` (listed in deploy/apt/browser.txt)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def spki_hash(cert_pem: Path) -> str:
    """base64(sha256(SubjectPublicKeyInfo)) of a certificate: what --ignore-certificate-errors-spki-list takes."""
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


class Chromium:
    """`async with Chromium(binary, profile, *flags) as browser:` one headless browser with one page."""

    def __init__(self, binary: str, profile: Path, *flags: str) -> None:
        self.args = [binary, *FLAGS, f"--user-data-dir={profile}", *flags, "about:blank"]
        self.profile = profile
        self.proc: asyncio.subprocess.Process | None = None
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)

    async def __aenter__(self) -> Chromium:
        devnull = asyncio.subprocess.DEVNULL
        self.proc = await asyncio.create_subprocess_exec(*self.args, stdout=devnull, stderr=devnull)
        active = self.profile / "DevToolsActivePort"
        await wait_until(lambda: active.exists() and len(active.read_text().split()) >= 2, timeout=30,
                         what="Chromium's DevTools port")
        port = active.read_text().split()[0]
        self.http = aiohttp.ClientSession()
        async with self.http.get(f"http://127.0.0.1:{port}/json/list") as response:
            targets = await response.json()
        page = next(t for t in targets if t["type"] == "page")
        self.ws = await self.http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        return self

    async def __aexit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.http is not None:
            await self.http.close()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events are not enabled, so none interleave)."""
        assert self.ws is not None
        ident = next(self._ids)
        await self.ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads((await asyncio.wait_for(self.ws.receive(), 30)).data)
            if message.get("id") == ident:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return dict(message["result"])

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise's once it settled)."""
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    async def load(self, url: str, timeout: float = 30) -> None:
        """Navigate to `url` (make it unique per load) and wait until that document has loaded."""
        await self.call("Page.navigate", url=url)
        check = f"location.href === {json.dumps(url)} && document.readyState === 'complete'"

        async def loaded() -> bool:
            try:
                return bool(await self.evaluate(check))
            except AssertionError:
                return False  # the old document's context went away mid-call

        await wait_until(loaded, timeout=timeout, interval=0.05, what=f"{url} loaded")

    async def protocol(self) -> str:
        """The protocol that fetched the current document (`http/1.1`, `h2` or `h3`)."""
        return str(await self.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol"))
