"""The leader's template guard asks each host to protect a rollout's old version on every change of protection."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from services.scaler.guard import TemplateGuard
from shared.contract.rollout import RolloutPhase, RolloutState
from shared.contract.subjects import Subjects


class FakeBus:
    """Records each request's subject and command (the guard's only use of the bus)."""

    def __init__(self) -> None:
        self.subjects = Subjects()
        self.sent: list[tuple[str, bool]] = []

    async def request(self, subject: str, command: Any, _reply: type, _timeout: float) -> None:
        self.sent.append((subject, command.protected))


def _run(guard: TemplateGuard, tasks: list[Coroutine[Any, Any, None]], state: RolloutState) -> None:
    guard.keep(state, ["h1"])
    for task in tasks:
        asyncio.run(task)
    tasks.clear()


def test_a_second_rollout_from_the_same_version_protects_it_again() -> None:
    """Protect (rollout 1), release (it ends), protect again (rollout 2 from the same old version): three asks."""
    bus, tasks = FakeBus(), []
    guard = TemplateGuard(bus, lambda coro, _name: tasks.append(coro))  # type: ignore[arg-type]
    running = RolloutState(phase=RolloutPhase.ROLLING, old_version="v1", new_version="v2")
    over = running.model_copy(update={"phase": RolloutPhase.DONE})
    for state in (running, running, over, running):
        _run(guard, tasks, state)
    subject = Subjects().prov_template_protect("h1")
    assert bus.sent == [(subject, True), (subject, False), (subject, True)]
