"""Headless Chromium finds the balancer over TCP and moves to HTTP/3 through the Alt-Svc it is sent.

Nothing forces QUIC on the origin under test; one thing needs saying about the certificate.
Chromium's QUIC certificate check refuses any chain that does not end in a root of Chrome's own
root store (`ERR_QUIC_CERT_ROOT_NOT_KNOWN`, net/quic/crypto/proof_verifier_chromium.cc), and
`--ignore-certificate-errors-spki-list` does not change that: it makes the chain valid, not
known. The one exception is a host named in `--origin-to-force-quic-on`, whose port that check
ignores (`HostsFromOrigins` in quic_session_pool.cc). So the upgrade test names 127.0.0.1 with
port 9 (discard: nothing listens and nothing is loaded there), which lets the self-signed dev
certificate through QUIC while leaving QUIC forced on no origin we load. Without it (second
test) Chromium tries HTTP/3 after the Alt-Svc, fails that check, marks the alternative broken
and stays on TCP, which works as it should. The upgrade test runs on aioquic only: see `QH3_CHROMIUM`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.balancer.service import BalancerService
from shared.bus import Bus
from tests.integration.balancer.harness import StartBalancer, announce
from tests.support import wait_until
from tests.support.chromium import Chromium, chromium_binary, spki_hash
from tests.support.h1server import H1Backend

pytestmark = pytest.mark.browser

UNKNOWN_ROOT_ALLOWED = "--origin-to-force-quic-on=127.0.0.1:9"
"""Lets Chromium's QUIC accept the dev certificate for 127.0.0.1 while forcing QUIC on no origin we load."""
QH3_CHROMIUM = (
    "qh3 2.1.0 never completes a QUIC handshake with Chromium 156, even with QUIC forced on the origin and "
    "with a plain qh3 server outside the balancer (aioquic does): the upgrade is shown on aioquic"
)


def trust_flag(balancer: BalancerService) -> str:
    """Chromium's pin for the balancer's development certificate (the same on TCP and QUIC)."""
    return f"--ignore-certificate-errors-spki-list={spki_hash(balancer.settings.balancer_state_dir / 'dev-cert.pem')}"


async def test_chromium_moves_from_tcp_to_http3(
    bus: Bus, start_balancer: StartBalancer, tmp_path: Path, quic_engine: str
) -> None:
    """Chromium's first load goes over TCP (HTTP/2) and, thanks to the Alt-Svc, a later one over HTTP/3."""
    if quic_engine == "qh3":
        pytest.skip(QH3_CHROMIUM)
    binary = chromium_binary()
    async with H1Backend() as backend, start_balancer() as balancer:
        await announce(bus, balancer, "vm-a", backend.address)
        origin = f"https://127.0.0.1:{balancer.port}"
        async with Chromium(binary, tmp_path / "profile", trust_flag(balancer), UNKNOWN_ROOT_ALLOWED) as browser:
            await browser.load(f"{origin}/?load=0")
            assert await browser.protocol() == "h2"
            assert backend.last_headers[b"via"] == b"2 quicfleet-test"
            assert balancer.tcp is not None and balancer.tcp.requests["h2"] >= 1
            loads = iter(range(1, 1000))

            async def on_http3() -> bool:
                await browser.load(f"{origin}/?load={next(loads)}")
                return bool(await browser.protocol() == "h3")

            await wait_until(on_http3, timeout=30, interval=0.1, what="a page load over HTTP/3")
            assert backend.last_headers[b"via"] == b"3 quicfleet-test", "the backend saw the request arrive over HTTP/3"


async def test_chromium_loads_over_tcp_and_sees_alt_svc(
    bus: Bus, start_balancer: StartBalancer, tmp_path: Path
) -> None:
    """Plain headless Chromium (no QUIC flag at all) loads the page over TCP and sees the Alt-Svc naming the port."""
    binary = chromium_binary()
    async with H1Backend() as backend, start_balancer() as balancer:
        await announce(bus, balancer, "vm-a", backend.address)
        origin = f"https://127.0.0.1:{balancer.port}"
        async with Chromium(binary, tmp_path / "profile", trust_flag(balancer)) as browser:
            await browser.load(f"{origin}/")
            protocol = await browser.protocol()
            alt_svc = await browser.evaluate("fetch('/again').then(r => r.headers.get('alt-svc'))")
    assert protocol in ("h2", "http/1.1")
    assert alt_svc == f'h3=":{balancer.port}"; ma=86400'
    assert backend.served() >= 1 and backend.last_headers[b"via"] in (b"1.1 quicfleet-test", b"2 quicfleet-test")
