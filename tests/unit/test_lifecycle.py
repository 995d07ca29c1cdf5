"""The background-task base every service stands on: cancelling its loops ends them."""

from __future__ import annotations

import asyncio

from shared.lifecycle import TaskGroupService


async def _swallows_one_cancel(swallowed: asyncio.Event) -> None:
    """A loop caught in a call that drops a cancel (as Python 3.11's wait_for can), then going on."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        swallowed.set()
    while True:
        await asyncio.sleep(3600)


async def test_cancel_tasks_cancels_again_a_task_that_swallowed_the_cancel() -> None:
    """A task that drops the first cancel is cancelled again, so cancel_tasks returns instead of hanging."""
    service, swallowed = TaskGroupService(), asyncio.Event()
    task = service.spawn(_swallows_one_cancel(swallowed), "stubborn")
    await asyncio.sleep(0)
    async with asyncio.timeout(10):
        await service.cancel_tasks()
    assert swallowed.is_set() and task.cancelled()
