#!/usr/bin/env bash
# Install quicfleet on a Debian KVM host (`make install`, as root): the packages a host needs to run
# (deploy/apt/run.txt only), a virtual environment in /opt/quicfleet pinned by deploy/constraints.txt,
# the system users, directories and systemd units, and /etc/quicfleet/quicfleet.toml when there is none.
# It enables nothing: docs/operations.md's checklist says which units to enable on which host.
#
# The wheel's top-level packages are `ops`, `services` and `shared`: they go into /opt/quicfleet's own
# virtualenv only, never the system's site-packages (docs/operations.md, "Packaging").
#
#   deploy/install-host.sh [--root DIR] [--no-apt] [--no-venv] [--python PY]
#     --root DIR   install into DIR instead of / (a staging tree; tests use it); implies --no-apt
#     --no-apt     do not install Debian packages
#     --no-venv    do not build /opt/quicfleet (units and files only)
#     --python PY  the interpreter the virtualenv is made from (default: Debian's /usr/bin/python3; a
#                  python3 found first on root's PATH, pyenv's say, may live under /root, which the
#                  service users cannot enter)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source_tree="$(dirname "$here")"
root="" apt=1 venv=1 python=/usr/bin/python3
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="${2%/}"; apt=0; shift 2 ;;
    --no-apt) apt=0; shift ;;
    --no-venv) venv=0; shift ;;
    --python) python="$2"; shift 2 ;;
    *) echo "install-host: unknown argument $1" >&2; exit 2 ;;
  esac
done
prefix=/opt/quicfleet

if [ "$apt" = 1 ]; then bash "$here/install-apt.sh" "$here/apt/run.txt"; fi

if [ "$venv" = 1 ]; then
  "$python" -m venv "$root$prefix"
  # pip inside the venv, and nothing in root's environment may send files elsewhere (PIP_PREFIX=/usr/local
  # or PIP_TARGET would put ops/, services/ and shared/ in a site-packages every Python on the host reads).
  venv_pip=(env -u PIP_PREFIX -u PIP_TARGET -u PIP_ROOT -u PIP_USER "$root$prefix/bin/python" -m pip
            --require-virtualenv install --quiet)
  "${venv_pip[@]}" --upgrade pip
  constraints=()
  [ -f "$here/constraints.txt" ] && constraints=(--constraint "$here/constraints.txt")
  rm -rf "$source_tree/build"  # setuptools' leftovers of an earlier build would go into the wheel as they are
  "${venv_pip[@]}" "${constraints[@]}" "$source_tree"
  # the packages must load from the venv itself (-I: no PYTHONPATH, no user site, no current directory)
  if ! "$root$prefix/bin/python" -I -c '
import sys, ops, services, shared
sys.exit(any(not m.__file__.startswith(sys.prefix + "/") for m in (ops, services, shared)))'; then
    echo "install-host: ops, services and shared do not load from $root$prefix: refusing to go on" >&2
    exit 1
  fi
fi

install -d "$root/etc/systemd/system" "$root/etc/sysusers.d" "$root/etc/tmpfiles.d"
install -m 0644 "$here"/systemd/*.service "$here"/systemd/*.target "$root/etc/systemd/system/"
install -m 0644 "$here/systemd/sysusers-quicfleet.conf" "$root/etc/sysusers.d/quicfleet.conf"
install -m 0644 "$here/systemd/tmpfiles-quicfleet.conf" "$root/etc/tmpfiles.d/quicfleet.conf"

# the files on stdin: with --root, a path would be looked up inside the root
systemd-sysusers ${root:+--root="$root"} - < "$here/systemd/sysusers-quicfleet.conf"
systemd-tmpfiles ${root:+--root="$root"} --create - < "$here/systemd/tmpfiles-quicfleet.conf"

config="$root/etc/quicfleet/quicfleet.toml"
if [ ! -e "$config" ]; then
  install -m 0640 "$here/quicfleet.toml" "$config"
  chgrp --reference="$root/etc/quicfleet" "$config"
  echo "install-host: wrote $config (edit it, then: quicfleet config check)"
fi

if [ -z "$root" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
cat <<DONE
install-host: installed. Next (docs/operations.md, "Production checklist"):
  $prefix/bin/quicfleet config check
  systemctl enable --now quicfleet.target quicfleet-provisioner.service        # every KVM host
  systemctl enable --now quicfleet-balancer@1 quicfleet-scaler@1 quicfleet-metrics  # where they run
DONE
