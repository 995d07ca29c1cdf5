"""How the CLI finds the operator's NATS login that `quicfleet up` made, with no flag to type.

`up` leaves one small file per NATS client port in this user's state directory
(`$XDG_STATE_HOME/quicfleet/logins/nats-<port>.json`, 0700): the user name, the path of the
password file in its run directory (never the password itself) and the reply prefix. The CLI
reads it only when no QUICFLEET_NATS_USER, _PASSWORD, _TOKEN or _CREDS is set (nor the settings
file's `[common]` names a login: `ops.cli.client.cli_settings`) and only for a loopback URL: a
login made for this machine's `up` is never sent anywhere else. The directory is the user's own,
so another user on the machine finds nothing (and could not read the password file if they did).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from ops.natsauth import OPERATOR, PASSWORD_FILE, inbox_prefix, write_private

EXPLICIT = ("QUICFLEET_NATS_USER", "QUICFLEET_NATS_PASSWORD", "QUICFLEET_NATS_PASSWORD_FILE",
            "QUICFLEET_NATS_TOKEN", "QUICFLEET_NATS_CREDS")
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def login_dir(env: Mapping[str, str]) -> Path:
    """This user's directory of logins left by `up`."""
    state = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return Path(state) / "quicfleet" / "logins"


def loopback_port(url: str) -> int | None:
    """The port of the first URL when it names this machine (nats://127.0.0.1:4222 -> 4222), else None."""
    try:
        parts = urlsplit(url.split(",", maxsplit=1)[0].strip())
        port = parts.port or 4222
    except ValueError:
        return None
    return port if parts.hostname in LOOPBACK and not parts.username else None


def login_record(auth_dir: Path) -> dict[str, str]:
    """What a login file says: the operator's user, password file and reply prefix."""
    return {"user": OPERATOR, "password_file": str(auth_dir / OPERATOR / PASSWORD_FILE),
            "inbox_prefix": inbox_prefix(OPERATOR)}


def overrides(record: Mapping[str, str]) -> dict[str, str]:
    """A login record as ServiceSettings keyword arguments."""
    return {"nats_user": record["user"], "nats_password_file": record["password_file"],
            "nats_inbox_prefix": record["inbox_prefix"]}


def discover(url: str, env: Mapping[str, str]) -> dict[str, str]:
    """The settings that log the CLI in to `up`'s NATS at `url`, or nothing (explicit settings win)."""
    port = loopback_port(url)
    if port is None or any(env.get(name) for name in EXPLICIT):
        return {}
    try:
        record = json.loads((login_dir(env) / f"nats-{port}.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict) or not os.access(str(record.get("password_file", "")), os.R_OK):
        return {}
    return overrides(record)


def leave(ports: Sequence[int], auth_dir: Path, env: Mapping[str, str]) -> None:
    """`up` says where its operator login is, for each of its client ports."""
    for port in ports:
        write_private(login_dir(env) / f"nats-{port}.json", json.dumps(login_record(auth_dir)) + "\n")


def withdraw(ports: Sequence[int], auth_dir: Path, env: Mapping[str, str]) -> None:
    """`up` takes its login files back when it stops (only those that still point at its run)."""
    for port in ports:
        path = login_dir(env) / f"nats-{port}.json"
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()) == login_record(auth_dir):
                path.unlink()
