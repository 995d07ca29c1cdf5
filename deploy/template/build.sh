#!/usr/bin/env bash
# Build quicfleet's small test template from Debian packages only, and optionally define it
# (domain `backend-template` plus its disk as a volume in a pool) in a libvirt.
#
#   deploy/template/build.sh                 build, then define into $QUICFLEET_LIBVIRT_URI
#                                            (default qemu:///system) when that libvirt answers
#   deploy/template/build.sh --build-only    only build the artefacts
#   deploy/template/build.sh --define --uri URI --pool NAME --pool-dir DIR --boot-dir DIR --network NET
#
# Artefacts (in --out, default deploy/template/build/): vmlinuz, initrd.img, root.qcow2 and
# backend-template.xml.in. The guest: the Debian kernel, a busybox initramfs that loads the
# virtio and ext4 modules, and an ext4 root disk with busybox, Caddy 2.6.2 (HTTP/1.1, 2 and 3
# on 443), the QEMU guest agent and an init that retries DHCP until it has a lease. Rebuilds only when an input changed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/build"
uri="${QUICFLEET_LIBVIRT_URI:-qemu:///system}"
name="backend-template"
pool="quicfleet"
pool_dir="/var/lib/libvirt/images/quicfleet"
boot_dir="/var/lib/libvirt/boot/quicfleet"
network="default"
memory_mib=256
domain_type="qemu"
mode="auto"   # auto: define when the libvirt answers; define: must define; build-only

die() { echo "build.sh: $*" >&2; exit 1; }
say() { echo "build.sh: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --uri) uri="$2"; shift 2 ;;
    --name) name="$2"; shift 2 ;;
    --pool) pool="$2"; shift 2 ;;
    --pool-dir) pool_dir="$2"; shift 2 ;;
    --boot-dir) boot_dir="$2"; shift 2 ;;
    --network) network="$2"; shift 2 ;;
    --memory-mib) memory_mib="$2"; shift 2 ;;
    --domain-type) domain_type="$2"; shift 2 ;;
    --define) mode="define"; shift ;;
    --build-only) mode="build-only"; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

for tool in apt-get apt-cache dpkg-deb busybox cpio gzip mkfs.ext4 qemu-img openssl ldd sha256sum flock; do
  command -v "$tool" >/dev/null || die "missing $tool (install the packages in deploy/apt/vm.txt)"
done
[ -x /usr/bin/caddy ] || die "missing /usr/bin/caddy (apt-get install caddy)"
[ -x /usr/sbin/qemu-ga ] || die "missing /usr/sbin/qemu-ga (apt-get install qemu-guest-agent)"
# The guest has no libc of its own for busybox: it must be the static build.
ldd /usr/bin/busybox >/dev/null 2>&1 && die "/usr/bin/busybox is dynamic: apt-get install busybox-static"

kernel_package() {
  # The versioned package behind the linux-image-amd64 meta package (or the override).
  if [ -n "${QUICFLEET_TEMPLATE_KERNEL:-}" ]; then echo "$QUICFLEET_TEMPLATE_KERNEL"; return; fi
  apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}

fetch_kernel() {
  # Download and unpack the kernel .deb once; later builds reuse it.
  local package="$1" cache="$out/cache"
  mkdir -p "$cache"
  if ! ls "$cache/$package"_*.deb >/dev/null 2>&1; then
    say "downloading $package"
    (cd "$cache" && apt-get download -o APT::Sandbox::User=root "$package" >/dev/null)
  fi
  if [ ! -f "$cache/$package.unpacked/done" ]; then
    rm -rf "$cache/$package.unpacked"
    dpkg-deb -x "$cache/$package"_*.deb "$cache/$package.unpacked"
    local version="${package#linux-image-}"
    busybox depmod -b "$cache/$package.unpacked" "$version"
    touch "$cache/$package.unpacked/done"
  fi
}

module_closure() {
  # Every module file (relative to lib/modules/<ver>) the named modules need, deps included.
  local dep_file="$1"; shift
  local wanted
  for wanted in "$@"; do
    grep -E "/${wanted}\.ko(\.xz|\.zst)?:" "$dep_file" | tr -d ':' | tr ' ' '\n'
  done | awk 'NF' | sort -u
}

build_initramfs() {
  local unpacked="$1" version="$2" staging
  staging="$(mktemp -d "$out/initramfs.XXXXXX")"
  mkdir -p "$staging/bin" "$staging/lib/modules/$version"
  cp /usr/bin/busybox "$staging/bin/busybox"
  install -m 0755 "$here/guest/initramfs-init" "$staging/init"
  local modules="$unpacked/lib/modules/$version" module
  for module in $(module_closure "$modules/modules.dep" crc32c_generic virtio_pci virtio_blk virtio_net virtio-rng virtio_console ext4); do
    mkdir -p "$staging/lib/modules/$version/$(dirname "$module")"
    cp "$modules/$module" "$staging/lib/modules/$version/$module"
  done
  busybox depmod -b "$staging" "$version"
  (cd "$staging" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -9 > "$out/initrd.img.new"
  mv "$out/initrd.img.new" "$out/initrd.img"
  rm -rf "$staging"
}

copy_with_libraries() {
  # Copy a dynamically linked binary and every library ldd lists, at the same paths.
  local binary="$1" root="$2" library
  mkdir -p "$root$(dirname "$binary")"
  cp "$binary" "$root$binary"
  for library in $(ldd "$binary" | grep -oE '/[^ ]+'); do
    mkdir -p "$root$(dirname "$library")"
    cp -L "$library" "$root$library"
  done
}

build_root_disk() {
  local staging
  staging="$(mktemp -d "$out/root.XXXXXX")"
  mkdir -p "$staging"/{bin,sbin,etc/caddy,dev,proc,sys,run,tmp,var/lib/caddy,root}
  cp /usr/bin/busybox "$staging/bin/busybox"
  ln -s busybox "$staging/bin/sh"
  # qemu-ga's guest-set-time runs /sbin/hwclock: a clone taken from the warm pool gets its clock set
  ln -s ../bin/busybox "$staging/sbin/hwclock"
  install -m 0755 "$here/guest/init" "$staging/sbin/init"
  install -m 0755 "$here/guest/udhcpc.sh" "$staging/etc/udhcpc.sh"
  install -m 0644 "$here/guest/Caddyfile" "$staging/etc/caddy/Caddyfile"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj /CN=quicfleet-backend -keyout "$staging/etc/caddy/key.pem" -out "$staging/etc/caddy/cert.pem" 2>/dev/null
  cp "$staging/etc/caddy/cert.pem" "$out/backend-cert.pem"
  copy_with_libraries /usr/bin/caddy "$staging"
  copy_with_libraries /usr/sbin/qemu-ga "$staging"
  echo "root:x:0:0:root:/root:/bin/sh" > "$staging/etc/passwd"
  echo "root:x:0:" > "$staging/etc/group"
  rm -f "$out/root.raw"
  mkfs.ext4 -q -F -L quicfleet -d "$staging" "$out/root.raw" 128M >/dev/null
  qemu-img convert -O qcow2 "$out/root.raw" "$out/root.qcow2.new"
  mv "$out/root.qcow2.new" "$out/root.qcow2"
  rm -rf "$staging" "$out/root.raw"
}

inputs_digest() {
  # Everything that changes the artefacts: our guest files, this script, kernel, caddy and qemu-ga.
  { cat "$here/build.sh" "$here/domain.xml.in" "$here"/guest/*; echo "$1"; sha256sum /usr/bin/caddy /usr/bin/busybox /usr/sbin/qemu-ga; } \
    | sha256sum | cut -d' ' -f1
}

build() {
  local package version digest
  package="$(kernel_package)"
  if [ -z "$package" ] && [ "$(id -u)" = 0 ]; then
    say "apt knows no linux-image-amd64 yet: apt-get update"
    apt-get update -qq
    package="$(kernel_package)"
  fi
  [ -n "$package" ] || die "cannot resolve linux-image-amd64 to a kernel package (run apt-get update)"
  version="${package#linux-image-}"
  digest="$(inputs_digest "$package")"
  if [ -f "$out/digest" ] && [ "$(cat "$out/digest")" = "$digest" ] && [ -f "$out/root.qcow2" ]; then
    say "artefacts up to date in $out"
    return
  fi
  fetch_kernel "$package"
  local unpacked="$out/cache/$package.unpacked"
  cp "$unpacked/boot/vmlinuz-$version" "$out/vmlinuz"
  build_initramfs "$unpacked" "$version"
  build_root_disk
  cp "$here/domain.xml.in" "$out/backend-template.xml.in"
  echo "$digest" > "$out/digest"
  say "built $(du -sh "$out/vmlinuz" "$out/initrd.img" "$out/root.qcow2" | awk '{printf "%s %s; ", $2, $1}')"
}

virsh_() { virsh -q -c "$uri" "$@"; }

ensure_pool() {
  if ! virsh_ pool-info "$pool" >/dev/null 2>&1; then
    mkdir -p "$pool_dir"
    virsh_ pool-define-as "$pool" dir --target "$pool_dir" >/dev/null
  fi
  virsh_ pool-info "$pool" | grep -q running || virsh_ pool-start "$pool" >/dev/null
}

define() {
  ensure_pool
  local target
  target="$(virsh_ pool-dumpxml "$pool" | sed -n 's#.*<path>\(.*\)</path>.*#\1#p' | head -1)"
  [ -n "$target" ] || die "pool $pool has no target path"
  if virsh_ dominfo "$name" >/dev/null 2>&1; then
    virsh_ domstate "$name" | grep -q "shut off" || die "domain $name is running; stop it first"
    virsh_ undefine "$name" >/dev/null
  fi
  virsh_ vol-delete --pool "$pool" "$name.qcow2" >/dev/null 2>&1 || true
  mkdir -p "$boot_dir"
  cp "$out/vmlinuz" "$boot_dir/vmlinuz"
  cp "$out/initrd.img" "$boot_dir/initrd.img"
  cp "$out/root.qcow2" "$target/$name.qcow2"
  virsh_ pool-refresh "$pool" >/dev/null
  local xml
  xml="$(mktemp)"
  sed -e "s#@NAME@#$name#" -e "s#@MEMORY_MIB@#$memory_mib#" -e "s#@KERNEL@#$boot_dir/vmlinuz#" \
      -e "s#@INITRD@#$boot_dir/initrd.img#" -e "s#@DISK@#$target/$name.qcow2#" \
      -e "s#@NETWORK@#$network#" -e "s#@DOMAIN_TYPE@#$domain_type#" "$out/backend-template.xml.in" > "$xml"
  virsh_ define "$xml" >/dev/null
  rm -f "$xml"
  say "defined $name (volume $name.qcow2 in pool $pool, network $network) in $uri"
}

mkdir -p "$out"
exec 9>"$out/.lock"
flock 9   # two builds (two labs, or make template next to a test run) take turns
build
case "$mode" in
  build-only) ;;
  define) define ;;
  auto)
    if virsh -q -c "$uri" uri >/dev/null 2>&1; then define
    else say "no libvirt answers at $uri: built only (start libvirtd, or use --define --uri URI)"; fi ;;
esac
