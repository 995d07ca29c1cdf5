"""The origin's kickstart read as Anaconda reads it (pykickstart), and what the README promises it does.

`ksvalidator` (run by `check`) says whether the file is valid kickstart syntax for a Fedora release; this
module checks what syntax cannot: the firewall opens both 443s, nginx and the guest agent are installed and
enabled, every %post stops the install on failure (a half-made template would be cloned silently), the HTTP/3
guard, SELinux's label for udp/443 (without it nginx may not bind its QUIC port) and the machine-id reset
are there, and the two systemd units the %post writes (`units`) are the ones
the README names. `virt_install_problems`: virt-install.sh injects the kickstart it boots and every file the
%post copies. Pure: text in, findings out (pykickstart parses strings without touching the system).
"""

from __future__ import annotations

import re
import shlex

from pykickstart.constants import KS_SCRIPT_POST
from pykickstart.errors import KickstartError
from pykickstart.parser import KickstartParser
from pykickstart.version import makeVersion

UNIT_HEREDOC = re.compile(r"cat > /etc/systemd/system/(?P<name>[\w@.-]+) <<'UNIT'\n(?P<body>.*?)\nUNIT\n", re.S)
UNITS = ("quicfleet-cert.service", "quicfleet-identity.service")
PORTS = ("443:tcp", "443:udp")
SERVICES = ("nginx", "qemu-guest-agent")
PACKAGES = ("nginx", "openssl", "qemu-guest-agent", "policycoreutils-python-utils")
POST_MUST_SAY = (
    ("the HTTP/3 guard", "--with-http_v3_module"),
    ("the SELinux label for udp/443", "semanage port -a -t http_port_t -p udp 443"),
    ("the machine-id reset", "truncate -s 0 /etc/machine-id"),
    *((f"`systemctl enable {unit}`", f"systemctl enable {unit}") for unit in UNITS),
)
NOCHROOT_MUST_SAY = "cp /nginx.conf /mnt/sysroot/etc/nginx/nginx.conf"


def units(kickstart: str) -> dict[str, str]:
    """The systemd units the %post writes with `cat > /etc/systemd/system/NAME <<'UNIT'`, by name."""
    return {match["name"]: match["body"] + "\n" for match in UNIT_HEREDOC.finditer(kickstart)}


def exec_start(unit: str) -> list[str]:
    """The unit's ExecStart= as systemd splits it: `\\` continues a line, `%%` is a literal `%`."""
    joined = re.sub(r"\\\n", " ", unit)
    line = next(line for line in joined.splitlines() if line.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart=").replace("%%", "%"))


def contract_problems(kickstart: str, version: str) -> list[str]:
    """What the README promises of origin.ks and pykickstart's parse of it for `version` does not show."""
    parser = KickstartParser(makeVersion(version))
    try:
        parser.readKickstartFromString(kickstart)
    except KickstartError as error:
        return [f"does not parse: {' '.join(str(error).split())}"]
    handler = parser.handler
    found = [f"firewall does not open {port}" for port in PORTS if port not in handler.firewall.ports]
    found += [f"service {name} not enabled" for name in SERVICES if name not in handler.services.enabled]
    found += [f"package {name} not installed" for name in PACKAGES if name not in handler.packages.packageList]
    posts = [script for script in handler.scripts if script.type == KS_SCRIPT_POST]
    found += [f"%post at line {script.lineno} lacks --erroronfail" for script in posts if not script.errorOnFail]
    chroot = "\n".join(script.script for script in posts if script.inChroot)
    nochroot = "\n".join(script.script for script in posts if not script.inChroot)
    found += [f"%post lacks {what} ({text!r})" for what, text in POST_MUST_SAY if text not in chroot]
    found += [] if NOCHROOT_MUST_SAY in nochroot else [f"%post --nochroot lacks {NOCHROOT_MUST_SAY!r}"]
    return found + [f"%post writes no {name}" for name in UNITS if name not in units(chroot)]


INJECTED = re.compile(r'--initrd-inject "\$here/(?P<file>[\w.-]+)"')


def virt_install_problems(script: str, kickstart: str) -> list[str]:
    """virt-install.sh must inject the kickstart it names in `inst.ks=` and every file the %post copies from `/`."""
    injected = set(INJECTED.findall(script))
    found = [] if "origin.ks" in injected else ["virt-install.sh does not inject origin.ks"]
    if "inst.ks=file:/origin.ks" not in script:
        found.append("virt-install.sh does not boot the installer with inst.ks=file:/origin.ks")
    copied = re.findall(r"^cp /(?P<file>[\w.-]+) /mnt/sysroot/", kickstart, re.M)
    return found + [f"origin.ks copies /{name}, which virt-install.sh does not inject" for name in copied
                    if name not in injected]
