"""`quicfleet get`: HTTP/3 GETs through the balancer, to see which VM answered.

It uses niquests with HTTP/1.1 and HTTP/2 disabled, so a reply proves the QUIC path works end to
end; a client that could fall back to TCP would hide a broken UDP path.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import niquests

from ops.cli.client import EXIT_ERROR, EXIT_UNREACHABLE, CliError
from ops.cli.loadcore import BACKEND_HEADER
from shared.contract.status import FleetStatus


@dataclass(frozen=True)
class Answer:
    """One response, reduced to what a person checks."""

    status: int
    http_version: int
    backend: str | None
    body: str

    def line(self) -> str:
        via = f" via {self.backend}" if self.backend else ""
        return f"HTTP/{self.http_version / 10:g} {self.status}{via}: {self.body}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def balancer_url(status: FleetStatus, path: str) -> str | None:
    """The URL of the first reporting balancer (a wildcard address means this host's loopback)."""
    for balancer in status.balancers:
        if balancer.address:
            host, _, port = balancer.address.rpartition(":")
            host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}.get(host, host)
            return f"https://{host}:{port}/{path.lstrip('/')}"
    return None


def get(url: str, count: int, verify: bool, timeout: float) -> list[Answer]:
    """`count` GETs over one HTTP/3 session; CliError when the balancer cannot be reached."""
    answers = []
    with warnings.catch_warnings(), niquests.Session(disable_http1=True, disable_http2=True) as session:
        warnings.simplefilter("ignore")  # the unverified-TLS warning: --verify is the user's choice
        for _ in range(count):
            try:
                response = session.get(url, verify=verify, timeout=timeout)
            except niquests.exceptions.RequestException as error:
                raise CliError(f"GET {url} failed: {type(error).__name__}: {error}", EXIT_UNREACHABLE) from None
            body = (response.text or "").strip().splitlines()
            version = int(response.http_version or 0)
            answers.append(Answer(int(response.status_code or 0), version, response.headers.get(BACKEND_HEADER),
                                  body[0][:200] if body else ""))
    return answers


def check(answers: list[Answer]) -> None:
    """CliError (exit 1) when any answer is not a 2xx."""
    bad = [a for a in answers if not 200 <= a.status < 300]
    if bad:
        raise CliError(f"{len(bad)} of {len(answers)} requests failed: {bad[0].line()}", EXIT_ERROR)
