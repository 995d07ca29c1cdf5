"""Reading a systemd unit of deploy/systemd/ the way systemd would start it, for tests without systemd.

A test that runs a service "by hand from its unit" takes the command from `ExecStart=`, the
variables from `Environment=`, the user from `User=`/`Group=` and the capabilities from
`AmbientCapabilities=`, with the specifiers `%i` and `%H` filled in and the unit's absolute paths
moved under a staging root (what `deploy/install-host.sh --root DIR` installed).
"""

from __future__ import annotations

import shlex
import socket
from dataclasses import dataclass
from pathlib import Path

STAGED = ("/opt/quicfleet", "/etc/quicfleet", "/var/lib/quicfleet", "/run/quicfleet")
"""The unit paths that a `--root` install puts under its root."""


def _directives(text: str) -> dict[str, list[str]]:
    """Each `Key=value` of the unit (comments and section headers left out), in order per key."""
    found: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@dataclass(frozen=True)
class Unit:
    """What starting one unit takes: command, environment, user, group and the ambient capabilities."""

    argv: list[str]
    environment: dict[str, str]
    user: str
    group: str
    capabilities: list[str]
    state_directory: str | None


def read_unit(path: Path, root: Path, instance: str = "") -> Unit:
    """The unit at `path`, its specifiers filled (`%i` = `instance`, `%H` = this host) and paths under `root`."""
    values = _directives(path.read_text())

    def fill(text: str) -> str:
        text = text.replace("%%", "\0").replace("%i", instance).replace("%H", socket.gethostname())
        for prefix in STAGED:
            text = text.replace(prefix, f"{root}{prefix}")
        return text.replace("\0", "%")

    environment = dict(item.split("=", 1) for line in values.get("Environment", []) for item in shlex.split(line))
    state = values.get("StateDirectory", [None])[-1]
    return Unit(
        argv=[fill(word) for word in shlex.split(values["ExecStart"][-1])],
        environment={key: fill(value) for key, value in environment.items()},
        user=values["User"][-1], group=values["Group"][-1],
        capabilities=[c.lower().removeprefix("cap_") for c in values.get("AmbientCapabilities", [""])[-1].split()],
        state_directory=fill(f"/var/lib/{state}") if state else None,
    )


def setpriv_argv(unit: Unit) -> list[str]:
    """`setpriv` running the unit's command as its user and group (with the user's groups), no new privileges,
    and only the unit's ambient capabilities (what `User=`, `NoNewPrivileges=` and `AmbientCapabilities=` do)."""
    caps = ",".join(f"+{c}" for c in unit.capabilities)
    argv = ["setpriv", f"--reuid={unit.user}", f"--regid={unit.group}", "--init-groups", "--no-new-privs",
            f"--bounding-set=-all{',' + caps if caps else ''}", f"--inh-caps=-all{',' + caps if caps else ''}"]
    if caps:
        argv.append(f"--ambient-caps={caps}")
    return [*argv, "--", *unit.argv]
