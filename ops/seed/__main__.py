"""`python -m ops.seed [--workdir D]`: the origin template's checks; exit 1 with one line per finding."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ops.seed import KICKSTART, KS_VERSIONS, NGINX_CONF
from ops.seed.check import kickstart_check, nginx_check


def main(argv: list[str]) -> int:
    """Both checks on the shipped files (or the given ones); the findings, or one line saying they held."""
    parser = argparse.ArgumentParser(prog="python -m ops.seed", description=__doc__)
    parser.add_argument("--nginx-conf", type=Path, default=NGINX_CONF)
    parser.add_argument("--kickstart", type=Path, default=KICKSTART)
    parser.add_argument("--nginx", default="nginx", help="the nginx binary (Debian's nginx-light is enough)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="quicfleet-seed-") as work:
        ks_text = args.kickstart.read_text()
        found = nginx_check(args.nginx_conf.read_text(), ks_text, Path(work) / "nginx", args.nginx)
        found += kickstart_check(args.kickstart, KS_VERSIONS, Path(work) / "units")
    for finding in found:
        print(finding, file=sys.stderr)
    print(f"origin template: {len(found)} finding(s)" if found else "origin template: nginx.conf and origin.ks hold")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
