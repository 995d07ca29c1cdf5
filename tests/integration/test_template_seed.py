"""The origin's Fedora + nginx template (deploy/template/fedora) checked with the real tools this machine has.

Debian's nginx 1.22 (`nginx -t`) parses nginx.conf without its `# [h3]` lines, pykickstart's ksvalidator
parses origin.ks for Fedora 37 and 41, and systemd-analyze verifies the units its %post writes; each check is
also shown to fail on a file broken the way a careless edit would break it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ops.seed import KICKSTART, KS_VERSIONS, NGINX_CONF, nginxconf
from ops.seed.check import kickstart_check, ksvalidator, nginx_check
from tests.support.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
CONF = NGINX_CONF.read_text()
KS = KICKSTART.read_text()


def nginx() -> str:
    """Debian's nginx, or a loud skip (a failure under CI)."""
    return require_tool("nginx", "nginx-light")


@pytest.fixture(autouse=True)
def _ksvalidator() -> None:
    """pykickstart comes with the dev extra; without it the kickstart checks cannot run."""
    if ksvalidator() is None:
        message = "ksvalidator NOT FOUND: `pip install -e '.[dev]'` installs pykickstart"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def without(text: str, needle: str) -> str:
    """`text` minus every line containing `needle`."""
    return "".join(line for line in text.splitlines(keepends=True) if needle not in line)


def test_the_shipped_nginx_conf_passes_nginx_t_and_the_http3_checks(tmp_path: Path) -> None:
    """nginx.conf holds: its HTTP/3 lines are well formed and Debian's nginx -t accepts the rest."""
    assert nginx_check(CONF, KS, tmp_path, nginx()) == []
    copy = nginxconf.parse((tmp_path / "nginx.conf").read_text())
    assert [line.code for line in copy if nginxconf.h3_token(line.code)] == []
    assert len(copy) == len(CONF.splitlines())
    status = next(line.number for line in nginxconf.parse(CONF) if line.code.startswith("add_header QUIC-Status"))
    assert copy[status - 1].code == 'add_header QUIC-Status "" always;'


def test_removing_the_quic_listener_fails_the_check(tmp_path: Path) -> None:
    """Without `listen ... quic`, nginx -t still passes but the check reports the missing QUIC listener."""
    found = nginx_check(without(CONF, "quic reuseport"), KS, tmp_path, nginx())
    assert any("no QUIC listener" in finding for finding in found), found
    assert any("Alt-Svc must name h3" in finding for finding in found), found


def test_an_unmarked_http3_line_is_reported_and_breaks_nginx_t(tmp_path: Path) -> None:
    """`http3 on;` without its marker is named, and really reaches nginx 1.22, which rejects it."""
    found = nginx_check(CONF.replace("http3 on;                           # [h3]", "http3 on;"), KS, tmp_path, nginx())
    assert any("an http3 directive without the `# [h3]` marker" in finding for finding in found), found
    assert any('nginx -t exited 1: nginx: [emerg] unknown directive "http3"' in finding for finding in found), found


def test_a_marker_cannot_hide_an_ordinary_line_from_nginx_t(tmp_path: Path) -> None:
    """A `# [h3]` on a line any nginx parses is refused, so markers never shrink what nginx -t checks."""
    found = nginx_check(CONF.replace("server_tokens off;", "server_tokens off;  # [h3]"), KS, tmp_path, nginx())
    assert found == ["nginx.conf: line 19: `# [h3]` on a line that needs no HTTP/3 (nginx -t would never see it): "
                     "`server_tokens off;`"]


def test_a_malformed_quic_listener_is_reported(tmp_path: Path) -> None:
    """`listen 443 quic ssl` (TLS over TCP and QUIC on one listen line) is not a valid HTTP/3 listener."""
    broken = CONF.replace("listen 443 quic reuseport;", "listen 443 quic ssl reuseport;")
    found = nginx_check(broken, KS, tmp_path, nginx())
    assert any("malformed HTTP/3 directive: `listen 443 quic ssl reuseport;`" in finding for finding in found), found


def test_nginx_t_catches_an_ordinary_mistake(tmp_path: Path) -> None:
    """The copy really goes through nginx -t: a misspelt directive outside the HTTP/3 lines fails it."""
    found = nginx_check(CONF.replace("server_tokens off;", "server_tokens of;"), KS, tmp_path, nginx())
    assert any('nginx -t exited 1: nginx: [emerg] invalid value "of"' in finding for finding in found), found
    assert any("nginx.conf:19" in finding for finding in found), found


def test_the_identity_unit_writes_an_include_nginx_accepts(tmp_path: Path) -> None:
    """The kickstart's identity unit, run over a fake SMBIOS UUID, writes the lower-case x-quicfleet-vm line."""
    assert nginx_check(CONF, KS, tmp_path, nginx()) == []
    written = (tmp_path / "quicfleet-vm.conf").read_text()
    assert written == "add_header x-quicfleet-vm 6f1c4e2a-0b5d-4c3e-9a7b-1d2e3f405162 always;\n"
    found = nginx_check(CONF, KS.replace(" always;\\n", " always\\n"), tmp_path / "broken", nginx())
    assert any("quicfleet-identity.service wrote" in finding for finding in found), found
    assert any("nginx -t exited 1" in finding for finding in found), found


def test_the_shipped_kickstart_validates_for_fedora_37_and_41(tmp_path: Path) -> None:
    """ksvalidator accepts origin.ks for F37 and F41, its promises hold, and its units verify."""
    require_tool("systemd-analyze", "systemd")
    assert KS_VERSIONS == ("F37", "F41")
    assert kickstart_check(KICKSTART, KS_VERSIONS, tmp_path / "units") == []


@pytest.mark.parametrize(("edit", "expected"), [
    (("%post --erroronfail --log", "%post --erroraction=abort --log"),
     "ksvalidator -v F37 exited 1"),
    (("autopart --type=plain", "autopartition --type=plain"), "ksvalidator -v F37 exited 1"),
    (("--port=443:udp", ""), "origin.ks (F37): firewall does not open 443:udp"),
    (("--erroronfail --log=/root/ks-post.log", "--log=/root/ks-post.log"), "lacks --erroronfail"),
    (("truncate -s 0 /etc/machine-id", "true"), "lacks the machine-id reset"),
    (("semanage port -a -t http_port_t -p udp 443 2>/dev/null || ", ""), "lacks the SELinux label for udp/443"),
    (("Type=oneshot\nExecStart=/usr/bin/openssl", "Type=oneshott\nExecStart=/usr/bin/openssl"),
     "systemd-analyze verify"),
    (("cp /nginx.conf /mnt", "cp /nginx-quic.conf /mnt"), "copies /nginx-quic.conf, which virt-install.sh does not"),
])
def test_a_broken_kickstart_fails_the_check(tmp_path: Path, edit: tuple[str, str], expected: str) -> None:
    """Bad syntax, a closed QUIC port, a %post that may fail silently or a broken unit is reported."""
    require_tool("systemd-analyze", "systemd")
    old, new = edit
    assert old in KS
    broken = tmp_path / "origin.ks"
    broken.write_text(KS.replace(old, new))
    found = kickstart_check(broken, KS_VERSIONS, tmp_path / "units")
    assert any(expected in finding for finding in found), found


def test_python_m_ops_seed_passes_on_the_shipped_files() -> None:
    """The command the README names exits 0 and says the files hold."""
    nginx()
    result = subprocess.run([sys.executable, "-m", "ops.seed"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nginx.conf and origin.ks hold" in result.stdout
