#!/usr/bin/env bash
# Build the origin template unattended: Fedora from a network install tree, kickstart and
# nginx.conf injected into the installer's initrd, the result defined as `backend-template`.
# Needs a KVM host with internet access (it cannot run on the CI machines: no ISO, no internet).
#
#   deploy/template/fedora/virt-install.sh [--uri qemu:///system] [--network default] [--release 41]
#                                          [--name backend-template] [--mirror URL]
# --name: another name (e.g. backend-fedora) builds it beside a running fleet's template, to be pushed as a
# new template version and rolled out (docs/operations.md, "Changing the template").
# --mirror: where releases/<N>/ lives; a release past its end of life (37 included) is only on the archive:
# --mirror https://archives.fedoraproject.org/pub/archive/fedora/linux
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
uri="${QUICFLEET_LIBVIRT_URI:-qemu:///system}"
network="default"
release="41"
name="backend-template"
mirror="https://download.fedoraproject.org/pub/fedora/linux"
while [ $# -gt 0 ]; do
  case "$1" in
    --uri) uri="$2"; shift 2 ;;
    --network) network="$2"; shift 2 ;;
    --release) release="$2"; shift 2 ;;
    --name) name="$2"; shift 2 ;;
    --mirror) mirror="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 1 ;;
  esac
done
location="$mirror/releases/$release/Everything/x86_64/os/"
virt-install --connect "$uri" \
  --name "$name" \
  --memory 1024 --vcpus 1 \
  --disk size=6,format=qcow2 \
  --network network="$network",model=virtio \
  --os-variant "fedora$release" \
  --location "$location" \
  --initrd-inject "$here/origin.ks" --initrd-inject "$here/nginx.conf" \
  --extra-args "inst.ks=file:/origin.ks console=ttyS0,115200" \
  --graphics none --noautoconsole --wait -1
# Declare that its guests prove their UUID (x-quicfleet-vm): the provisioner then checks it.
virsh --connect "$uri" metadata "$name" urn:quicfleet:vm:1 --key qf --config \
  --set '<template><identity>uuid</identity></template>'
echo "$name is installed and shut off; the provisioner clones it (or push it as a template version)."
