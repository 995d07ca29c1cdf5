"""Run a piece of a test inside a network namespace: a thread that joins the namespace, then runs it.

A network namespace is a property of a thread (setns(2) with CLONE_NEWNET), and sockets and
child processes made by that thread live in it. So a test can run a service in-process as if on
another host (the L4 topology's host namespace) without touching the test process's own network:
every other thread stays where it was. Python 3.11 has no `os.setns`; libc's is called through ctypes.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


def _join(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns into {name}: {os.strerror(error)}")
    finally:
        os.close(fd)


def run_in_netns(name: str, work: Callable[[], T]) -> T:
    """`work()` on a thread inside namespace `name` (`ip netns add`); its result, or its exception re-raised."""
    outcome: dict[str, object] = {}

    def body() -> None:
        try:
            _join(name)
            outcome["value"] = work()
        except BaseException as error:  # handed back to the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=body, name=f"netns-{name}")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
