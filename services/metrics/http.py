"""The HTTP side: `/metrics`, `/healthz`, `/readyz`, the dashboard page and its JSON, on aiohttp.

Thin glue: every handler reads the metrics core and renders it; nothing here computes load.
Static assets (the page, its script and the vendored uPlot) are served from the package, so
the dashboard works on machines with no internet.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from services.metrics import dashboard
from services.metrics.exposition import make_registry, render
from services.metrics.state import MetricsState

log = structlog.get_logger("services.metrics.http")

STATIC = Path(__file__).parent / "static"
MAX_POINTS_PARAM = 100_000


def make_app(
    state: MetricsState, healthy: Callable[[], bool], ready: Callable[[], str | None] = lambda: None
) -> web.Application:
    """The aiohttp application; `healthy` says whether the service is connected to NATS, `ready` why it should
    not be scraped or sent to now (`draining`, `disconnected`), None when it should."""
    registry = make_registry(state)

    async def metrics(_request: web.Request) -> web.Response:
        body = render(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request: web.Request) -> web.Response:
        ok = healthy()
        return web.json_response({"ok": ok, "nats": "connected" if ok else "disconnected"}, status=200 if ok else 503)

    async def readyz(_request: web.Request) -> web.Response:
        reason = ready()
        body = {"ready": True} if reason is None else {"ready": False, "reason": reason}
        return web.json_response(body, status=200 if reason is None else 503)

    async def api(request: web.Request) -> web.Response:
        points = _points(request.query.get("points"))
        return web.json_response(dashboard.payload(state, points, _since(request.query.get("since"))))

    async def index(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/dashboard", api)
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    return app


def _points(raw: str | None) -> int | None:
    """The `points` query parameter: a bounded count, or None (all) when absent or not a number."""
    if raw is None or not raw.isdigit():
        return None
    return min(int(raw), MAX_POINTS_PARAM)


def _since(raw: str | None) -> float | None:
    """The `since` query parameter: a finite time (epoch s), or None (everything) otherwise."""
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


class HttpServer:
    """Starts and stops the aiohttp server; knows the port it really bound (0 = any free port)."""

    def __init__(self, app: web.Application, host: str, port: int, reuse_port: bool = False) -> None:
        self.runner = web.AppRunner(app, access_log=None)
        self.host = host
        self.port = port
        self.reuse_port = reuse_port
        """SO_REUSEPORT, so `--scale metrics=N` on a host network does not fail on "address in use"."""
        self.started = False

    async def start(self) -> None:
        self.started = True
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port, reuse_port=self.reuse_port)
        try:
            await site.start()
        except OSError as error:
            log.error("http.bind_failed", host=self.host, port=self.port, error=error.strerror or str(error))
            self.started = False
            await self.runner.cleanup()
            raise
        self.port = self.runner.addresses[0][1]
        log.info("http.listening", host=self.host, port=self.port)

    async def stop(self) -> None:
        """Close the server (nothing to do when it never started: the service failed before)."""
        if self.started:
            self.started = False
            await self.runner.cleanup()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"
