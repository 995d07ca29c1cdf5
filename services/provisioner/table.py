"""The table of this host's VMs: the one writer of VM state, and the tasks that work on them.

Every change of an entry goes through here: the commands' own (`fleet.py`), and the changes a
VM's long steps hand back (`core/changes.py`: a boot in `boot.py`, a take in `warmpool.py`). A
step is an async generator that yields the change it wants; `spawn` runs it and applies each
change, so no step holds the table, and each new state is published once, in the state
machine's order, by this one writer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from datetime import datetime

import structlog

from services.provisioner.core.changes import Advance, Change, Fail, applied
from services.provisioner.core.errors import RemovalIncomplete
from services.provisioner.core.machine import VmEntry, can_become, transition
from services.provisioner.core.ports import Hypervisor
from services.provisioner.execute import teardown
from services.provisioner.settings import ProvisionerSettings
from shared.contract.events import LIVE_STATES, VmState

log = structlog.get_logger("provisioner.fleet")

Publish = Callable[[VmEntry], Awaitable[None]]
Steps = AsyncGenerator[Change, None]
"""A VM's long work (clone and boot, a take, an adoption): the changes it wants, in order."""
_KEEP_FINISHED = 1000


class VmTable:
    """Entries by VM name, request ids, the tasks working on VMs, and the removals under way."""

    def __init__(
        self, settings: ProvisionerSettings, hv: Hypervisor, publish: Publish, clock: Callable[[], datetime]
    ) -> None:
        self.settings = settings
        self.hv = hv
        self._publish = publish
        self.clock = clock
        self.entries: dict[str, VmEntry] = {}
        self.by_request: dict[str, str] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.removing: dict[str, asyncio.Event] = {}

    # --- entries -----------------------------------------------------------------------------
    async def put(self, entry: VmEntry) -> None:
        """Store `entry` and publish it: every `fleet.vm.*` event of this host goes out here."""
        self.entries[entry.name] = entry
        if entry.request_id:
            self.by_request[entry.request_id] = entry.name
        log.info("vm.state", vm=entry.name, state=entry.state.value, address=entry.address, reason=entry.reason)
        await self._publish(entry)
        self._prune()

    async def apply(self, name: str, change: Change) -> None:
        """Carry out what a step asked: a new state (published), learnt facts (kept), or a removal."""
        if isinstance(change, Fail):
            await self._give_up(name, change.reason)
            return
        current = self.entries[name]
        entry = applied(current, change, self.clock())
        if entry is None:
            to = change.to.value if isinstance(change, Advance) else None
            log.info("vm.transition_skipped", vm=name, state=current.state.value, to=to)
        elif isinstance(change, Advance):
            await self.put(entry)
        else:
            self.entries[name] = entry

    async def advance(self, name: str, to: VmState, reason: str | None = None) -> None:
        """Move a VM to `to` and publish it (refused transitions are logged and skipped)."""
        entry = self.entries[name]
        if not can_become(entry, to):
            log.info("vm.transition_skipped", vm=name, state=entry.state.value, to=to.value)
            return
        await self.put(transition(entry, to, self.clock(), reason=reason))

    def _prune(self) -> None:
        finished = [e for e in self.entries.values() if e.finished]
        for entry in sorted(finished, key=lambda e: e.since)[: max(0, len(finished) - _KEEP_FINISHED)]:
            del self.entries[entry.name]
            # every request id of the VM: a VM taken from the pool answers to its pooled create's id too
            for request_id in [r for r, name in self.by_request.items() if name == entry.name]:
                del self.by_request[request_id]

    def live(self) -> list[VmEntry]:
        return [e for e in self.entries.values() if e.state in LIVE_STATES]

    async def republish(self) -> None:
        """Announce every live VM again, so a restarted subscriber learns the fleet."""
        for entry in self.live():
            await self._publish(entry)

    # --- removal -----------------------------------------------------------------------------
    async def remove(self, name: str, reason: str | None) -> None:
        """Stop any work on the VM, publish `failed` when `reason` is given, tear down, publish `destroyed`.

        A second removal of the same VM while one runs waits for the first instead of racing it.
        """
        if (running := self.removing.get(name)) is not None:
            await running.wait()
            return
        done = self.removing[name] = asyncio.Event()
        try:
            await self._cancel(name)
            if reason is not None:
                await self.advance(name, VmState.FAILED, reason=reason)
            problems = await asyncio.to_thread(teardown, self.hv, name, self.entries[name].volumes)
            if problems:
                raise RemovalIncomplete(f"could not fully remove {name}: " + "; ".join(problems))
            await self.advance(name, VmState.DESTROYED)
        finally:
            del self.removing[name]
            done.set()

    async def _give_up(self, name: str, reason: str) -> None:
        """Fail and remove a VM whose clone, boot or take went wrong. When libvirt cannot finish the teardown
        now (libvirtd restarting: the usual reason a clone failed at all), the VM is already `failed` and the
        reconcile reaps what is left once libvirt answers; that is logged, not a crashed task."""
        try:
            await self.remove(name, reason)
        except RemovalIncomplete as incomplete:
            log.warning("vm.remove_incomplete", vm=name, error=str(incomplete), left_to="reconcile")

    # --- tasks -------------------------------------------------------------------------------
    def spawn(self, name: str, steps: Steps) -> None:
        """Run a VM's steps as its task, applying each change they yield (a destroy cancels the task)."""
        task = asyncio.create_task(self._drive(name, steps), name=f"vm-{name}")
        self.tasks[name] = task
        task.add_done_callback(lambda done: self._finished(name, done))

    async def _drive(self, name: str, steps: Steps) -> None:
        """`aclosing`: a cancelled task closes its steps at once, so a clone slot they hold is freed."""
        async with aclosing(steps):
            async for change in steps:
                await self.apply(name, change)

    async def _cancel(self, name: str) -> None:
        task = self.tasks.pop(name, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.wait([task])

    def _finished(self, name: str, task: asyncio.Task[None]) -> None:
        if self.tasks.get(name) is task:
            del self.tasks[name]
        if not task.cancelled() and task.exception() is not None:
            log.error("vm.task_crashed", vm=name, error=type(task.exception()).__name__, exc_info=task.exception())

    async def stop(self) -> None:
        """Stop working on VMs (the next start's reconcile finishes or cleans them)."""
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
