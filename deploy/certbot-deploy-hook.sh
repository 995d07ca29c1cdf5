#!/bin/sh
# Install a renewed certificate for the quicfleet balancers and make them serve it, without a restart.
#
# certbot:  certbot renew --deploy-hook /opt/quicfleet/share/quicfleet/deploy/certbot-deploy-hook.sh
#           (certbot sets RENEWED_LINEAGE, e.g. /etc/letsencrypt/live/lb.example.net)
# lego:     lego ... renew --renew-hook /opt/quicfleet/share/quicfleet/deploy/certbot-deploy-hook.sh
#           (lego sets LEGO_CERT_PATH and LEGO_CERT_KEY_PATH)
# by hand:  certbot-deploy-hook.sh CERT KEY
#
# The pair is copied (not linked: certbot's live/ holds symlinks a container or a hardened unit cannot
# follow) into QUICFLEET_TLS_DIR (default /etc/quicfleet/tls) as fullchain.pem and privkey.pem, key mode
# 0640 group quicfleet, each written aside and renamed into place. Then every balancer gets SIGHUP: it
# loads the new pair for new connections (open ones keep theirs), or logs
# `balancer.certificate_reload_failed` and keeps the old pair when the new one cannot be used.
# Under systemd: `systemctl kill -s HUP 'quicfleet-balancer@*'`. With compose, set QUICFLEET_COMPOSE_DIR
# to the directory of compose.yaml (started with CERT_DIR=$QUICFLEET_TLS_DIR): `docker compose kill -s HUP`.
set -eu

dest=${QUICFLEET_TLS_DIR:-/etc/quicfleet/tls}
if [ $# -eq 2 ]; then
    cert=$1 key=$2
elif [ -n "${RENEWED_LINEAGE:-}" ]; then
    cert=$RENEWED_LINEAGE/fullchain.pem key=$RENEWED_LINEAGE/privkey.pem
elif [ -n "${LEGO_CERT_PATH:-}" ] && [ -n "${LEGO_CERT_KEY_PATH:-}" ]; then
    cert=$LEGO_CERT_PATH key=$LEGO_CERT_KEY_PATH
else
    echo "usage: $0 CERT KEY (or run from certbot's --deploy-hook or lego's --renew-hook)" >&2
    exit 2
fi
[ -r "$cert" ] && [ -r "$key" ] || { echo "$0: cannot read $cert or $key" >&2; exit 1; }

group=root
getent group quicfleet >/dev/null 2>&1 && group=quicfleet
install -d -m 0750 -o root -g "$group" "$dest"
install -m 0644 -o root -g "$group" "$cert" "$dest/fullchain.pem.new"
install -m 0640 -o root -g "$group" "$key" "$dest/privkey.pem.new"
mv -f "$dest/privkey.pem.new" "$dest/privkey.pem"
mv -f "$dest/fullchain.pem.new" "$dest/fullchain.pem"

if [ -n "${QUICFLEET_COMPOSE_DIR:-}" ]; then
    (cd "$QUICFLEET_COMPOSE_DIR" && { docker compose kill -s HUP balancer 2>/dev/null \
        || docker-compose kill -s HUP balancer; })
elif command -v systemctl >/dev/null 2>&1; then
    systemctl kill -s HUP 'quicfleet-balancer@*'
fi
echo "quicfleet: installed $(openssl x509 -in "$dest/fullchain.pem" -noout -fingerprint -sha256 2>/dev/null \
    || echo "$dest/fullchain.pem") and signalled the balancers"
