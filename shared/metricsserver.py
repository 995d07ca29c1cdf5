"""`/metrics` of one Prometheus registry over HTTP, for the services that have no HTTP server of their own.

The scaler and the provisioner each expose a small registry (off unless their metrics port is set);
both serve it the same way, so the server is here once.
"""

from __future__ import annotations

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = structlog.get_logger("metrics.server")


class MetricsServer:
    """`/metrics` of one registry on host:port (0: any free port; `port` is the bound one once started)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.registry, self.host, self.port = registry, host, port
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Bind and serve; the port bound (an OSError when it is taken)."""
        registry = self.registry

        async def metrics(_request: web.Request) -> web.Response:
            return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner, self.port = runner, int(runner.addresses[0][1])
        log.info("metrics.listening", host=self.host, port=self.port)
        return self.port

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
