"""Running a few lines as another local user, for tests of what that user must not be able to do.

The tests run as root: a forked child drops to the user (`os.setuid`), runs the action and reports
"ok" or the errno it failed with; it stays alive (holding what it bound) until the context ends.
"""

from __future__ import annotations

import errno
import os
import pwd
from collections.abc import Callable, Iterator
from contextlib import contextmanager

UNPRIVILEGED = "nobody"


@contextmanager
def as_user(action: Callable[[], object], name: str = UNPRIVILEGED) -> Iterator[str]:
    """Run `action` in a child that became `name`; yields its outcome ("ok", or an errno name such as
    "EACCES") while the child lives on (what `action` keeps referenced, a bound socket say, stays open)."""
    user = pwd.getpwnam(name)
    report_r, report_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(report_r)
        os.close(hold_w)
        outcome = _dropped_run(action, user)
        os.write(report_w, outcome.encode())
        os.close(report_w)
        os.read(hold_r, 1)  # returns when the parent closes its end
        os._exit(0)
    os.close(report_w)
    os.close(hold_r)
    try:
        with os.fdopen(report_r, "rb") as report:
            yield report.read().decode() or "no report"
    finally:
        os.close(hold_w)
        os.waitpid(pid, 0)


def _dropped_run(action: Callable[[], object], user: pwd.struct_passwd) -> str:
    try:
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
        action()
    except OSError as error:
        return errno.errorcode.get(error.errno or 0, str(error))
    except BaseException as error:  # the child reports whatever stopped it
        return type(error).__name__
    return "ok"
