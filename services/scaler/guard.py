"""Keeping the version a rollout may roll back to: its base image is protected on every host while it runs.

A host deletes a base image only when no domain's backing chain holds it and the version is not
protected (the provisioner's rule). Once every VM runs the new version, no chain holds the old base,
yet a rollback would need it: so the leader asks each host it knows to protect the old version for
the rollout's whole life, and lifts the protection when it is over. Each (host, version, protected)
is asked once per change (a later rollout from the same version asks again); a host that does not
answer is asked again after `RETRY_S`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import structlog
from nats.errors import Error as NatsError

from shared.bus import Bus
from shared.contract.rollout import RolloutState
from shared.contract.templates import HostTemplateVersion, ProtectTemplate
from shared.errors import BusError

log = structlog.get_logger("services.scaler.guard")

Spawn = Callable[[Coroutine[Any, Any, None], str], object]
RETRY_S = 30.0
"""A provisioner that did not take a protect (down, or older) is asked again after this long."""


class TemplateGuard:
    """Sends `ProtectTemplate` for a rollout's old version to every host, once per change."""

    def __init__(self, bus: Bus, spawn: Spawn, clock: Callable[[], float] = time.time) -> None:
        self.bus, self.spawn, self.clock = bus, spawn, clock
        self._asked: dict[tuple[str, str, bool], float] = {}
        """(host, version, protected) -> when it may be asked again (inf: it answered, or the ask is out)."""

    def keep(self, state: RolloutState | None, hosts: Iterable[str]) -> None:
        """Protect the old version on every host while `state` is active; lift it once it is over."""
        if state is None or state.old_version is None:
            return
        now = self.clock()
        for host in hosts:
            key = (host, state.old_version, state.active)
            self._asked.pop((host, state.old_version, not state.active), None)  # the next flip is asked again
            if self._asked.get(key, float("-inf")) > now:
                continue
            self._asked[key] = float("inf")
            reason = f"rollout {state.old_version}->{state.new_version} may roll back to it" if state.active else None
            command = ProtectTemplate(version=state.old_version, protected=state.active, reason=reason)
            self.spawn(self._ask(key, command), f"rollout-protect-{host}")

    async def _ask(self, key: tuple[str, str, bool], command: ProtectTemplate) -> None:
        host = key[0]
        try:
            await self.bus.request(self.bus.subjects.prov_template_protect(host), command, HostTemplateVersion, 10.0)
        except (BusError, NatsError, TimeoutError, ValueError) as error:
            self._asked[key] = self.clock() + RETRY_S
            log.info("rollout.protect_failed", host=host, version=command.version, error=str(error) or "error")
            return
        log.info("rollout.protected", host=host, version=command.version, protected=command.protected)
