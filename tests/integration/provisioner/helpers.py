"""Helpers for provisioner integration tests: watching `fleet.vm.*` events as models."""

from __future__ import annotations

from collections.abc import Callable

from nats.aio.msg import Msg

from shared.bus import Bus
from shared.contract.events import VmState, VmStateChanged
from tests.support import Collector


class VmEvents:
    """Every `fleet.vm.*` event seen since `start`, parsed."""

    def __init__(self) -> None:
        self.collector = Collector()

    async def start(self, bus: Bus) -> VmEvents:
        collector = self.collector

        async def on_message(msg: Msg) -> None:
            await collector(msg)

        await bus.nc.subscribe(bus.subjects.vm_all, cb=on_message)
        return self

    @property
    def events(self) -> list[VmStateChanged]:
        return [VmStateChanged.model_validate_json(m.data) for m in self.collector.messages]

    def states(self, vm: str) -> list[VmState]:
        return [e.state for e in self.events if e.vm == vm]

    async def wait(self, match: Callable[[VmStateChanged], bool], timeout: float = 30.0) -> VmStateChanged:
        msg = await self.collector.wait_for(lambda m: match(VmStateChanged.model_validate_json(m.data)), timeout)
        return VmStateChanged.model_validate_json(msg.data)

    async def wait_state(self, vm: str, state: VmState, timeout: float = 30.0) -> VmStateChanged:
        return await self.wait(lambda e: e.vm == vm and e.state is state, timeout)
