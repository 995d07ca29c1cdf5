#!/usr/bin/env bash
# Install the Debian packages listed in the given files (default deploy/apt/*.txt) that are missing.
# Needs root and apt-get; elsewhere it says what it could not install and goes on.
set -euo pipefail
lists=("$@")
[ ${#lists[@]} -gt 0 ] || lists=(deploy/apt/*.txt)
mapfile -t wanted < <(cat "${lists[@]}" | grep -v '^\s*#' | awk 'NF {print $1}' | sort -u)
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install-apt: cannot install ${missing[*]} (needs root and apt-get); continuing without them" >&2
  exit 0
fi
echo "install-apt: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Caddy (the guest template's server, the bench's peer) and nginx (`nginx -t` of the origin's config) lend only their
# binaries: where systemd runs, their packages would start both on port 80, and the second one's failed start fails
# its install. policy-rc.d keeps them from starting during this install (nothing else is held back).
policy=${QUICFLEET_POLICY_RC_D:-/usr/sbin/policy-rc.d}  # the path apt's invoke-rc.d reads (tests point it elsewhere)
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\ncase "$1" in caddy|nginx) exit 101;; esac\nexit 0\n' >"$policy"
  chmod 0755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# ...and are not enabled for the next boot either, when this install brought them (a host's own stays as it was).
for pkg in "${missing[@]}"; do
  case "$pkg" in caddy) unit=caddy ;; nginx-light) unit=nginx ;; *) continue ;; esac
  if command -v systemctl >/dev/null; then systemctl disable "$unit" >/dev/null 2>&1 || true; fi
done
