#!/bin/sh
# Image preparation shared by both stages of deploy/docker/Dockerfile.
#   build:   compilers and headers (libvirt-python builds from source), extra CA certificates
#   runtime: the libvirt client library and an unprivileged user
# Python comes from apt only when the base image has none (a bare Debian base).
set -eu
stage="$1"
packages="ca-certificates"
command -v python3 >/dev/null || packages="$packages python3 python3-venv"
if [ "$stage" = build ]; then
  packages="$packages gcc pkg-config libvirt-dev"
  command -v python3 >/dev/null || packages="$packages python3-dev"
else
  packages="$packages libvirt0"
fi
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $packages >/dev/null
rm -rf /var/lib/apt/lists/*
if [ "$stage" = build ] && [ -n "${EXTRA_CA_CERTS_B64:-}" ]; then
  echo "$EXTRA_CA_CERTS_B64" | base64 -d > /usr/local/share/ca-certificates/quicfleet-build-extra.crt
  update-ca-certificates >/dev/null
fi
if [ "$stage" = runtime ]; then
  useradd --system --uid 10001 --user-group --home-dir /var/lib/quicfleet --create-home quicfleet
  mkdir -p /var/lib/quicfleet/nats
  chown -R quicfleet:quicfleet /var/lib/quicfleet
fi
