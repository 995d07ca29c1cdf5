"""Composition root of the metrics service: settings into built parts, fakes when a test passes them.

The core state and the name that signs this replica's snapshots are made here, and the HTTP
server (`/metrics`, `/healthz`, the dashboard) is made from them; the service receives them
built and only connects, subscribes and runs its loops.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from services.metrics.http import HttpServer, make_app
from services.metrics.service import MetricsService
from services.metrics.settings import MetricsSettings
from services.metrics.state import MetricsState
from shared.bus import Bus


def bootstrap(settings: MetricsSettings, bus: Bus | None = None) -> MetricsService:
    """Build the metrics service; nothing connects or binds until it is entered (a test may pass its `bus`)."""
    source = f"{settings.instance[:50]}-{secrets.token_hex(3)}"  # replicas on one host share the instance name
    state = MetricsState(settings.metrics_window_s, settings.metrics_history_s, settings.metrics_interval_s, source)

    def http(healthy: Callable[[], bool], ready: Callable[[], str | None]) -> HttpServer:
        app = make_app(state, healthy, ready)
        return HttpServer(app, settings.metrics_host, settings.metrics_port, settings.metrics_reuse_port)

    return MetricsService(settings, state, source, http, bus=bus)
