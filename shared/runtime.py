"""`BusService`: the shape every quicfleet service shares (connect, register, work, drain)."""

from __future__ import annotations

from typing import ClassVar

import structlog
from nats.errors import Error as NatsError
from nats.micro.service import Service

from shared.bus import Bus, connect
from shared.contract.subjects import Subjects
from shared.endpoints import Endpoint, start_service
from shared.lifecycle import TaskGroupService
from shared.settings import ServiceSettings

log = structlog.get_logger("shared.runtime")


class BusService(TaskGroupService):
    """A service on NATS. Subclasses list their `endpoints()` and extend `on_start`/`on_stop`.

    Pass `bus` to use an existing connection (tests); otherwise `start` connects using settings.
    """

    name: ClassVar[str] = "service"
    description: ClassVar[str] = ""

    def __init__(self, settings: ServiceSettings, bus: Bus | None = None) -> None:
        super().__init__()
        self.settings = settings
        self._bus = bus
        self._owns_bus = bus is None
        self.micro: Service | None = None

    @property
    def bus(self) -> Bus:
        if self._bus is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._bus

    @property
    def subjects(self) -> Subjects:
        return self.bus.subjects

    def endpoints(self) -> list[Endpoint]:
        """The commands this service answers (none by default)."""
        return []

    async def on_start(self) -> None:
        """Start subscriptions and loops; runs after the bus is connected."""

    async def on_stop(self) -> None:
        """Finish in-flight work; runs before the bus is drained."""

    async def start(self) -> None:
        if self._bus is None:
            client = f"quicfleet-{self.name}-{self.settings.instance}"
            self._bus = Bus(await connect(self.settings, client), Subjects(self.settings.subject_prefix))
        metadata = {"instance": self.settings.instance}
        self.micro = await start_service(self.bus, self.name, self.description, self.endpoints(), metadata)
        await self.on_start()
        await self.bus.barrier()
        log.info("service.started", instance=self.settings.instance)

    async def stop(self) -> None:
        if self.micro is not None:
            try:
                await self.micro.stop()
            except (NatsError, TimeoutError, OSError, RuntimeError) as error:
                log.warning("service.unregister_failed", error=str(error) or type(error).__name__)
            self.micro = None
        await self.on_stop()
        await self.cancel_tasks()
        if self._bus is not None and self._owns_bus:
            await self._bus.drain()
