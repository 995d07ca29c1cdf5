#!/usr/bin/env bash
# Install the Debian packages listed in $1 that are missing (root + apt only; else say why and go on).
set -euo pipefail
list=${1:-deploy/apt-packages.txt}
mapfile -t wanted < <(grep -v '^\s*#' "$list" | awk 'NF {print $1}')
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
