"""Bad input over real NATS: every malformed event is counted, but only a few lines reach the log."""

from __future__ import annotations

import structlog

from ops.natsserver import NatsServer
from shared.bus import Bus, connect
from shared.contract.events import VmStateChanged
from shared.contract.subjects import Subjects
from shared.settings import ServiceSettings
from tests.support import wait_until


async def test_a_flood_of_malformed_events_is_counted_and_logged_a_few_times(nats_server: NatsServer, bus: Bus) -> None:
    """300 malformed events on one subject: all are counted, at most the burst is logged, the handler sees none."""
    listener = Bus(await connect(ServiceSettings(nats_url=nats_server.url), "listener"), Subjects())
    handled: list[VmStateChanged] = []

    async def handler(event: VmStateChanged, _msg: object) -> None:
        handled.append(event)

    subject = listener.subjects.vm_all
    await listener.subscribe(subject, VmStateChanged, handler)
    await listener.barrier()
    with structlog.testing.capture_logs() as logs:
        for i in range(300):
            await bus.nc.publish("fleet.vm.ready", b'{"vm": %d}' % i)
        await bus.nc.flush()
        await wait_until(lambda: listener.throttle.totals["fleet.vm.ready"] == 300, 20, 0.05, "every bad event counted")
    await listener.drain()
    lines = [entry for entry in logs if entry["event"] == "bus.bad_event"]
    assert 1 <= len(lines) <= listener.throttle.burst
    assert handled == []
