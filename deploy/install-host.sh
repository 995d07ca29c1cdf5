#!/usr/bin/env bash
# Install quicfleet on a Debian KVM host (`make install`, as root): the packages a host needs to run
# (deploy/apt/run.txt only), a virtual environment in /opt/quicfleet pinned by deploy/constraints.txt,
# the system users, directories and systemd units, and /etc/quicfleet/quicfleet.toml when there is none.
# It enables nothing: docs/operations.md's checklist says which units to enable on which host.
#
#   deploy/install-host.sh [--root DIR] [--no-apt] [--no-venv]
#     --root DIR   install into DIR instead of / (a staging tree; tests use it); implies --no-apt
#     --no-apt     do not install Debian packages
#     --no-venv    do not build /opt/quicfleet (units and files only)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source_tree="$(dirname "$here")"
root="" apt=1 venv=1
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="${2%/}"; apt=0; shift 2 ;;
    --no-apt) apt=0; shift ;;
    --no-venv) venv=0; shift ;;
    *) echo "install-host: unknown argument $1" >&2; exit 2 ;;
  esac
done
prefix=/opt/quicfleet

if [ "$apt" = 1 ]; then bash "$here/install-apt.sh" "$here/apt/run.txt"; fi

if [ "$venv" = 1 ]; then
  python3 -m venv "$root$prefix"
  "$root$prefix/bin/python" -m pip install --quiet --upgrade pip
  constraints=()
  [ -f "$here/constraints.txt" ] && constraints=(--constraint "$here/constraints.txt")
  "$root$prefix/bin/python" -m pip install --quiet "${constraints[@]}" "$source_tree"
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
