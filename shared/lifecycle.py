"""Process lifecycle: SIGTERM/SIGINT -> stop taking work -> drain -> exit 0.

Each service is an async context manager (`__aenter__` connects and starts, `__aexit__` drains);
`run_service` is the only place that owns the event loop and the signals, so it is also where
systemd hears of readiness (`READY=1` once the service is entered), pings of the watchdog (from
the event loop itself: a stalled loop stops them) and the start of a drain (`STOPPING=1`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Self

import structlog

from shared.sdnotify import Notifier

log = structlog.get_logger("shared.lifecycle")

CANCEL_AGAIN_S = 0.5
"""How long a cancelled task may take to end before it is cancelled again."""


class TaskGroupService:
    """Base for services: owns background tasks and cancels them on exit."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self.failed = asyncio.Event()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run a background loop; if it dies unexpectedly the failure is logged and `failed` set."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("task.crashed", task=task.get_name(), error=repr(error), exc_info=error)
            self.failed.set()

    async def cancel_tasks(self) -> None:
        """Cancel every background task and wait for them to finish, cancelling again any that goes on.

        Python 3.11's `asyncio.wait_for` drops a cancel that lands just as what it awaits
        completes, and nats-py awaits every request and flush through it: a loop caught there
        would run on, and a single cancel-then-gather would wait for it forever.
        """
        pending = set(self._tasks)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=CANCEL_AGAIN_S)
            if pending:
                log.debug("tasks.cancelled_again", tasks=sorted(t.get_name() for t in pending))

    async def start(self) -> None:
        """Connect and begin work; subclasses extend."""

    async def stop(self) -> None:
        """Stop taking work and drain; subclasses extend, then call this."""
        await self.cancel_tasks()

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()


def install_uvloop() -> bool:
    """Use uvloop when it is installed (a proxy gains ~3x from it); report whether it is."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


async def serve_until_signal(
    make: Callable[[], AbstractAsyncContextManager[Any]], grace_s: float = 10.0, notifier: Notifier | None = None
) -> int:
    """Enter the service, tell systemd it is ready, wait for SIGTERM/SIGINT (or a crashed task), drain."""
    loop = asyncio.get_running_loop()
    notifier = notifier or Notifier()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service = make()
    running = await service.__aenter__()
    failed: asyncio.Event = getattr(running, "failed", None) or asyncio.Event()
    notifier.ready()
    waiters: list[asyncio.Task[Any]] = [asyncio.create_task(stop.wait()), asyncio.create_task(failed.wait())]
    if notifier.watchdog_s is not None:
        waiters.append(asyncio.create_task(_watchdog(notifier, notifier.watchdog_s)))
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()
    code = 1 if failed.is_set() and not stop.is_set() else 0
    log.info("service.stopping", reason="crash" if code else "signal")
    notifier.stopping("crashed" if code else "draining")
    try:
        async with asyncio.timeout(grace_s):
            await service.__aexit__(None, None, None)
    except TimeoutError:
        log.warning("service.drain_timeout", grace_s=grace_s)
    log.info("service.stopped", code=code)
    return code


async def _watchdog(notifier: Notifier, every_s: float) -> None:
    """Ping systemd's watchdog from the event loop: a loop stuck for `WatchdogSec=` gets the service restarted."""
    while True:
        notifier.ping()
        await asyncio.sleep(every_s)


def run_service(
    make: Callable[[], AbstractAsyncContextManager[Any]], grace_s: float = 10.0, notifier: Notifier | None = None
) -> int:
    """Run a service in a fresh event loop until a signal; return the process exit code."""
    uv = install_uvloop()
    log.info("service.starting", uvloop=uv)
    return asyncio.run(serve_until_signal(make, grace_s, notifier))


def service_arguments(service: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """`--config FILE` and `--version`; arguments meant for someone else (`quicfleet serve x`) are left alone."""
    from shared.buildinfo import quicfleet_version

    parser = argparse.ArgumentParser(prog=f"python -m services.{service}", add_help=False)
    parser.add_argument("--config", default=None, help="TOML settings file (default: $QUICFLEET_CONFIG, "
                                                        "else /etc/quicfleet/quicfleet.toml when it exists)")
    parser.add_argument("--version", action="version", version=f"quicfleet {service} {quicfleet_version()}")
    known, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return known


def service_main(
    service: str,
    load: Callable[[], Any],
    bootstrap: Callable[[Any], AbstractAsyncContextManager[Any]],
    argv: Sequence[str] | None = None,
) -> int:
    """A service's `__main__`: read settings (exit 2 naming a bad value), log, run until a signal.

    `--config` is passed on as `QUICFLEET_CONFIG`, so child processes (balancer workers) read the
    same file. A setting refused later (NATS cannot keep the asked replicas) also exits 2.
    """
    from shared.logging import configure_logging
    from shared.settings import EXIT_BAD_SETTINGS, SettingsError

    config = service_arguments(service, argv).config
    if config is not None:
        os.environ["QUICFLEET_CONFIG"] = config
    try:
        settings = load()
    except SettingsError as error:
        print(f"quicfleet {service}: {error}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    configure_logging(settings.log_level, settings.log_format, service=service)
    warn_unknown_variables(type(settings))
    try:
        return run_service(lambda: bootstrap(settings), settings.shutdown_grace_s, Notifier.take())
    except SettingsError as error:
        log.error("service.bad_settings", error=str(error))
        return EXIT_BAD_SETTINGS


def warn_unknown_variables(cls: type[Any]) -> None:
    """Log each `QUICFLEET_*` variable no service reads: a misspelt one would otherwise be ignored silently."""
    from shared.settings import known_setting_names, unknown_variables

    for line in unknown_variables(os.environ, known_setting_names([cls])):
        log.warning("settings.unknown_variable", variable=line.split(" ", 1)[0], detail=line)
