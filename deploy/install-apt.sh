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
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
