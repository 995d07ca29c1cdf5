"""HTTP/3 GETs through the balancer in a loop, on a thread, while the test breaks NATS underneath."""

from __future__ import annotations

import threading
import time
import warnings
from dataclasses import dataclass, field

import niquests


@dataclass
class Prober:
    """GET `url` over one HTTP/3 session until stopped; counts answers and failures with their times."""

    url: str
    ok: int = 0
    failed: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prober", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        with warnings.catch_warnings(), niquests.Session(disable_http1=True, disable_http2=True) as session:
            warnings.simplefilter("ignore")  # the balancer's development certificate is not verified
            while not self._stop.is_set():
                try:
                    response = session.get(self.url, verify=False, timeout=3)
                    if response.status_code == 200 and response.http_version == 30:
                        self.ok += 1
                    else:
                        self.failed.append((time.monotonic(), f"HTTP {response.status_code}"))
                except niquests.exceptions.RequestException as error:
                    self.failed.append((time.monotonic(), type(error).__name__))
                self._stop.wait(0.02)
