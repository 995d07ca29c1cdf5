"""A `Fleet` over the fake hypervisor that records what it publishes and what it probes (shared by the unit tests)."""

from __future__ import annotations

from services.provisioner.core.machine import VmEntry
from services.provisioner.fleet import Fleet
from services.provisioner.settings import ProvisionerSettings
from shared.contract.events import VmState
from tests.unit.provisioner.fakes import FakeHypervisor


class Harness:
    """Static addresses on 127.0.0.1, a probe that answers when `ready`, and every published entry in order."""

    def __init__(self, hv: FakeHypervisor, ready: bool = True, **settings: object) -> None:
        base: dict[str, object] = {"fleet_id": "f1", "host": "h1", "address_strategy": "static",
                                   "static_addresses": "127.0.0.1:1,127.0.0.1:2", "boot_timeout_s": 0.5}
        self.published: list[VmEntry] = []
        self.probed: list[tuple[str, str | None]] = []
        self.ready = ready
        self.fleet = Fleet(ProvisionerSettings(**(base | settings)), hv, self.probe, self.publish)  # type: ignore[arg-type]

    async def probe(self, address: str, uuid: str | None = None) -> str | None:
        self.probed.append((address, uuid))
        return None if self.ready else f"nothing answers on {address}"

    async def publish(self, entry: VmEntry) -> None:
        self.published.append(entry)

    def states(self, name: str) -> list[VmState]:
        return [e.state for e in self.published if e.name == name]
