"""`quicfleet up`'s NATS users: made (or reused) before NATS starts, and the CLI told where the operator's is.

One set per run directory (`<workdir>/nats-auth`), whatever the mode or cluster size: a restarted
nats-server or service logs in with the same password, and so does the next `up` on this directory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from ops.cli import login
from ops.natsauth import OPERATOR, SCALER_BUCKET, Auth, prepare
from ops.stack.plan import with_login
from ops.stack.say import say
from shared.contract.subjects import Subjects

AUTH_DIR = "nats-auth"


def open_users(workdir: Path, enabled: bool, ports: Sequence[int], console: Console) -> Auth | None:
    """The users of this run (None with authorisation off), with the CLI's pointer left for each client port.

    The subjects and the scaler's bucket come from the environment the services get, so the
    permissions name what they will really use.
    """
    if not enabled:
        say(console, "NATS authorisation is off (--nats-auth off): any local process may send fleet commands",
            "bold yellow")
        return None
    directory = workdir / AUTH_DIR
    subjects = Subjects(os.environ.get("QUICFLEET_SUBJECT_PREFIX", "fleet"))
    auth = prepare(directory, subjects, os.environ.get("QUICFLEET_SCALER_BUCKET", SCALER_BUCKET))
    login.leave(ports, directory, os.environ)
    say(console, f"NATS authorisation on: one user per service, passwords in {directory} "
                 f"(`quicfleet` run by this user finds the {OPERATOR}'s)")
    return auth


def cli_env(auth: Auth | None) -> dict[str, str]:
    """The environment `up` runs its own `quicfleet health` checks in: logged in as the operator."""
    return with_login(os.environ, auth.env(OPERATOR) if auth is not None else None)


def close_users(auth: Auth | None, ports: Sequence[int]) -> None:
    """Take the CLI's pointers back (the passwords stay, for the next start)."""
    if auth is not None:
        login.withdraw(ports, auth.directory, os.environ)
