"""Reading the host's room for a list reply from libvirt, in time or not at all.

`capacity.measure` turns the figures into `VmList` fields; this is the I/O around it. The list
answers from memory, so a libvirt that fails or hangs costs the reply its figures, never its
answer: a host without figures is placed on by count, while a host that does not answer is,
after a while, written off by the scaler.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import structlog

from services.provisioner.core.capacity import UNKNOWN, Capacity, measure
from services.provisioner.core.ports import Hypervisor, HypervisorError
from shared.throttle import LineThrottle

log = structlog.get_logger("provisioner.room")
CAPACITY_TIMEOUT_S = 0.5
"""How long a list reply waits for libvirt's capacity figures: the list answers from memory, and a hung
libvirtd must not make a live provisioner miss the scaler's gather window and look lost."""
P = ParamSpec("P")
T = TypeVar("T")


class RoomReader:
    """The host's figures and the template's size, each read in a thread, bounded by `CAPACITY_TIMEOUT_S`."""

    def __init__(self, hv: Hypervisor, template: str) -> None:
        self.hv = hv
        self.template = template
        self._unmeasured = LineThrottle(burst=1, period_s=60.0)

    async def capacity(self) -> Capacity:
        """The host's room; what libvirt does not say in time, or fails to say, is left out (None)."""
        try:
            async with asyncio.timeout(CAPACITY_TIMEOUT_S):
                facts = await self._measured("host", self.hv.host_facts)
                template = await self._measured("template", self.hv.template, self.template)
        except TimeoutError:
            self._not_measured("timeout", f"libvirt gave no capacity figures within {CAPACITY_TIMEOUT_S:g} s")
            return UNKNOWN
        return measure(facts, template.xml if template is not None else None)

    async def _measured(self, part: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T | None:
        """A blocking capacity read in a thread; None (and a line saying why) when libvirt fails."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except HypervisorError as error:
            self._not_measured(part, str(error))
            return None

    def _not_measured(self, what: str, error: str) -> None:
        """One line a minute per cause: every list asks again, and the reason seldom changes."""
        if self._unmeasured.admit(what, time.monotonic()) is not None:
            log.warning("capacity.unknown", part=what, error=error)
