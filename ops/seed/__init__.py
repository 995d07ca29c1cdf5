"""The origin's template (deploy/template/fedora: Fedora + nginx with HTTP/3), checked where no Fedora runs.

The origin's template cannot be built on CI machines (it needs the Fedora install tree), so its two inputs are
checked as far as a Debian machine allows: `nginxconf` (pure) reads nginx.conf's HTTP/3 lines and writes the
copy that Debian's nginx 1.22 can parse; `kickstart` (pure) reads origin.ks's embedded units; `check` runs
the real tools (`nginx -t`, pykickstart's `ksvalidator`, the kickstart's own openssl and identity commands).
`python -m ops.seed` runs it all.
"""

from __future__ import annotations

from pathlib import Path

from ops.paths import DEPLOY

FEDORA = DEPLOY / "template" / "fedora"
"""Where origin.ks, nginx.conf and virt-install.sh live."""

NGINX_CONF: Path = FEDORA / "nginx.conf"
KICKSTART: Path = FEDORA / "origin.ks"
VIRT_INSTALL: Path = FEDORA / "virt-install.sh"
KS_VERSIONS = ("F37", "F41")
"""Fedora 37 is the origin's release; 41 is virt-install.sh's default. The kickstart must parse for both."""
