"""The balancer's admin port: `/metrics`, `/healthz` and `/readyz` on a small aiohttp server of its own.

It binds loopback unless `balancer_metrics_host` says otherwise: the counters name every VM and
carry no authentication, so they are for a scraper on the host (or inside the deployment's own
network), not for the clients the listen address faces.

Replicas of one host (`--scale balancer=N` on the host network, or worker processes) may all be
given the same fixed port. The first takes it; each later one takes the next free port of the
`span` ports from there and logs which, so replicas start instead of crash-looping on "address
in use". A scraper finds them as consecutive ports (port 0 still picks any free one).
The health pair (`process.health`) answers here too, when the bootstrap hands its probes over.
"""

from __future__ import annotations

import asyncio
import errno

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from services.balancer.process.health import Probes

log = structlog.get_logger("balancer.metrics")


class MetricsEndpoint:
    """Serves one registry's `/metrics`; `port` is the one it really bound once started."""

    def __init__(
        self, registry: CollectorRegistry, host: str, port: int, span: int = 1, probes: Probes | None = None
    ) -> None:
        self.registry, self.host, self.port, self.span = registry, host, port, max(1, span)
        self.probes = probes
        self.requested = port
        self._runner: web.AppRunner | None = None

    def candidates(self) -> list[int]:
        """The ports to try in order: the requested one, then the next ones of the span (port 0: any)."""
        if self.requested == 0:
            return [0]
        return [p for p in range(self.requested, self.requested + self.span) if p <= 65535]

    async def start(self) -> int:
        """Bind the first free port of `candidates`; raise the last "address in use" when none is."""
        runner = web.AppRunner(self._app(), access_log=None)
        await runner.setup()
        try:
            await self._bind(runner)
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        if self.probes is not None:
            self.probes.lag.start()
        self.port = int(runner.addresses[0][1])
        moved = self.requested not in (self.port, 0)
        log.info("metrics.listening", host=self.host, port=self.port, requested=self.requested if moved else None)
        return self.port

    async def _bind(self, runner: web.AppRunner) -> None:
        for port in self.candidates():
            try:
                await web.TCPSite(runner, self.host, port).start()
                return
            except OSError as error:
                if error.errno != errno.EADDRINUSE or port == self.candidates()[-1]:
                    log.error("metrics.bind_failed", host=self.host, port=port, error=error.strerror or str(error))
                    raise
                log.info("metrics.port_taken", host=self.host, port=port)

    def _app(self) -> web.Application:
        registry = self.registry

        async def metrics(_request: web.Request) -> web.Response:
            return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        if self.probes is not None:
            add_probes(app, self.probes)
        return app

    async def close(self) -> None:
        if self.probes is not None:
            await self.probes.lag.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def add_probes(app: web.Application, probes: Probes) -> None:
    """`/healthz` and `/readyz`: 200 or 503 with a small JSON body saying why."""

    async def healthz(_request: web.Request) -> web.Response:
        status, body = probes.live(asyncio.get_running_loop().time())
        return web.json_response(body, status=status)

    async def readyz(_request: web.Request) -> web.Response:
        status, body = probes.ready()
        return web.json_response(body, status=status)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
