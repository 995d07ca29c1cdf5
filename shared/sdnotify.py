"""systemd's readiness and watchdog protocol: datagrams to `$NOTIFY_SOCKET` (sd_notify(3)).

A unit with `Type=notify` counts a service started only once it says `READY=1`, so units
ordered after it wait for a service that is connected and registered, not for a process that
merely exists; with `WatchdogSec=` systemd restarts a service whose event loop stopped pinging.
Outside systemd (no `NOTIFY_SOCKET`) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping
from dataclasses import dataclass

_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


@dataclass(frozen=True)
class Notifier:
    """Where to send notifications, and how often the watchdog wants a ping (None: no watchdog)."""

    address: str | None = None
    watchdog_s: float | None = None

    @classmethod
    def take(cls, environ: MutableMapping[str, str] = os.environ) -> Notifier:
        """Read and remove the variables (as sd_notify's `unset_environment`), so that child processes
        (the balancer's workers) neither claim readiness nor ping the watchdog in the parent's name."""
        address = environ.get("NOTIFY_SOCKET") or None
        usec, pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
        for name in _VARIABLES:
            environ.pop(name, None)
        mine = not pid or pid == str(os.getpid())
        watchdog = int(usec) / 1_000_000 / 2 if usec.isdigit() and int(usec) > 0 and mine else None
        return cls(address, watchdog)

    def send(self, *fields: str) -> bool:
        """Send `KEY=value` lines in one datagram; False when not under systemd or the socket refused it."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(target)
                sock.sendall("\n".join(fields).encode())
        except OSError:
            return False
        return True

    def ready(self, status: str = "serving") -> bool:
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def stopping(self, status: str = "draining") -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def ping(self) -> bool:
        return self.send("WATCHDOG=1")
