"""The real tools on the origin's files: `nginx -t` (Debian's 1.22), `ksvalidator`, `systemd-analyze verify`.

`nginx -t` parses the copy that `nginxconf.copy_for_old_nginx` writes, in a throwaway prefix: the guest's
paths point into it, and the certificate and the x-quicfleet-vm include there are made by the kickstart's own
units' commands (openssl; the identity printf over a fake SMBIOS UUID), so a unit that writes something nginx
cannot read fails here too. Each check returns its findings; empty means it held.
"""

from __future__ import annotations

import getpass
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ops.seed import VIRT_INSTALL, kickstart, nginxconf

GUEST_PATHS = {
    "/etc/pki/nginx/server.crt": "server.crt",
    "/etc/pki/nginx/private/server.key": "server.key",
    "/etc/nginx/quicfleet-vm.conf": "quicfleet-vm.conf",
    "/sys/class/dmi/id/product_uuid": "product_uuid",
    "/var/log/nginx/": "logs/",
    "/run/nginx.pid": "nginx.pid",
}
"""Paths that exist only in the guest, and where the check puts them under its prefix."""
UNMAPPED = re.compile(r"(?<![\w$./-])/(etc|var|run|usr|sys)/[\w./-]*")
FAKE_UUID = "6F1C4E2A-0B5D-4C3E-9A7B-1D2E3F405162"
TIMEOUT_S = 60


def in_prefix(text: str, prefix: Path) -> str:
    """`text` with every guest path moved under `prefix`, and nginx's `user` the one running the check."""
    for guest, local in GUEST_PATHS.items():
        text = text.replace(guest, f"{prefix}/{local}")
    return re.sub(r"(?m)^user\s+\S+;", f"user {getpass.getuser()};", text)


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """One tool, its output kept for the findings."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


def failure(what: str, result: subprocess.CompletedProcess[str]) -> list[str]:
    """One finding naming the tool and what it said, or none when it exited 0."""
    said = " | ".join(line for line in (result.stdout + result.stderr).splitlines() if line.strip())
    return [] if result.returncode == 0 else [f"{what} exited {result.returncode}: {said}"]


def unit_command(units: dict[str, str], name: str, prefix: Path) -> list[str]:
    """A kickstart unit's ExecStart with the guest's paths under `prefix`."""
    return [in_prefix(word, prefix) for word in kickstart.exec_start(units[name])]


def stage(ks_text: str, prefix: Path) -> list[str]:
    """The guest's first boot in `prefix`: the cert unit's openssl and the identity unit's include."""
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    (prefix / "product_uuid").write_text(FAKE_UUID + "\n")
    units = kickstart.units(ks_text)
    missing = [name for name in kickstart.UNITS if name not in units]
    if missing:
        return [f"origin.ks writes no {name}" for name in missing]
    found = failure("quicfleet-cert.service", run(unit_command(units, "quicfleet-cert.service", prefix)))
    found += failure("quicfleet-identity.service", run(unit_command(units, "quicfleet-identity.service", prefix)))
    wanted = f"add_header x-quicfleet-vm {FAKE_UUID.lower()} always;\n"
    written = (prefix / "quicfleet-vm.conf").read_text() if (prefix / "quicfleet-vm.conf").exists() else ""
    return found + ([] if written == wanted else [f"quicfleet-identity.service wrote {written!r}, not {wanted!r}"])


def nginx_check(conf_text: str, ks_text: str, workdir: Path, nginx: str = "nginx") -> list[str]:
    """The static HTTP/3 checks, then `nginx -t` on the copy without HTTP/3 lines, in `workdir`."""
    found = [f"nginx.conf: {problem}" for problem in nginxconf.problems(conf_text)]
    prefix = workdir.resolve()
    found += stage(ks_text, prefix)
    copy = in_prefix(nginxconf.copy_for_old_nginx(conf_text), prefix)
    found += [f"nginx.conf: guest path {match[0]} has no place in the check (GUEST_PATHS)"
              for match in UNMAPPED.finditer(copy.replace(str(prefix), ""))]
    (prefix / "nginx.conf").write_text(copy)
    argv = [nginx, "-t", "-q", "-c", str(prefix / "nginx.conf"), "-p", f"{prefix}/", "-e", str(prefix / "error.log")]
    return found + failure("nginx -t", run(argv))


def ksvalidator() -> str | None:
    """pykickstart's ksvalidator: beside this Python (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "ksvalidator"
    return str(beside) if beside.exists() else shutil.which("ksvalidator")


def kickstart_check(ks_path: Path, versions: tuple[str, ...], units_dir: Path,
                    virt_install: Path = VIRT_INSTALL) -> list[str]:
    """ksvalidator for each release, the README's promises, virt-install.sh's injections, its units verified."""
    text = ks_path.read_text()
    tool = ksvalidator()
    found = [] if tool else ["ksvalidator not found: install the dev extra (pykickstart)"]
    found += kickstart.virt_install_problems(virt_install.read_text(), text)
    for version in versions:
        if tool:
            found += failure(f"ksvalidator -v {version}", run([tool, "-e", "-v", version, str(ks_path)]))
        found += [f"origin.ks ({version}): {problem}" for problem in kickstart.contract_problems(text, version)]
    units_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, body in kickstart.units(text).items():
        (units_dir / name).write_text(body)
        paths.append(str(units_dir / name))
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        return [*found, "systemd-analyze not found (Debian's systemd): the kickstart's units are unchecked"]
    verify = run([analyze, "verify", "--man=no", *paths])
    said = (verify.stdout + verify.stderr).strip()
    return found + ([f"systemd-analyze verify: {said}"] if verify.returncode or said else [])
