"""deploy/install-apt.sh installs what is missing without starting or enabling daemons it needs only the binaries of."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIMS = {
    # nothing is installed yet
    "dpkg-query": "#!/bin/sh\nexit 1\n",
    # apt's invoke-rc.d asks policy-rc.d before starting each package's service: record its answers
    "apt-get": '#!/bin/sh\n[ "$1" = install ] || exit 0\nfor s in caddy nginx libvirtd; do\n'
               '  "$QUICFLEET_POLICY_RC_D" "$s" start; echo "$s $?" >>"$RECORD/policy"\ndone\n',
    "systemctl": '#!/bin/sh\necho "$*" >>"$RECORD/systemctl"\n',
}


def _install(tmp_path: Path, packages: list[str]) -> Path:
    shims, record = tmp_path / "bin", tmp_path / "record"
    shims.mkdir()
    record.mkdir()
    for name, text in SHIMS.items():
        (shims / name).write_text(text)
        (shims / name).chmod(0o755)
    wanted = tmp_path / "list.txt"
    wanted.write_text("# a comment\n" + "\n".join(packages) + "\n")
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}", "RECORD": str(record),
           "QUICFLEET_POLICY_RC_D": str(tmp_path / "policy-rc.d")}
    subprocess.run(["bash", str(ROOT / "deploy/install-apt.sh"), str(wanted)], env=env, check=True,
                   capture_output=True, timeout=30)
    return record


def test_caddy_and_nginx_are_held_from_starting_and_not_enabled(tmp_path: Path) -> None:
    """During the install policy-rc.d refuses caddy and nginx (101) and allows the rest; then both are disabled."""
    record = _install(tmp_path, ["caddy", "nginx-light", "libvirt-daemon-system"])
    assert (record / "policy").read_text().split("\n")[:3] == ["caddy 101", "nginx 101", "libvirtd 0"]
    assert (record / "systemctl").read_text().split() == ["disable", "caddy", "disable", "nginx"]
    assert not (tmp_path / "policy-rc.d").exists(), "the temporary policy must be removed after the install"


def test_a_caddy_the_install_did_not_bring_is_left_enabled(tmp_path: Path) -> None:
    """Only daemons this install brought are disabled: installing another package disables nothing."""
    record = _install(tmp_path, ["qemu-utils"])
    assert not (record / "systemctl").exists()
