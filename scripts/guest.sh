#!/usr/bin/env bash
# scripts/guest.sh [small|debian] [OUTDIR]
#
# Builds a bootable x86-64 guest from Debian's packages and caches it in OUTDIR
# (default $HOME/.cache/vmifs/guest/<kind>); a cached guest is rebuilt only when
# this script has changed. Prints what it produced as shell assignments, so
# callers can `eval "$(scripts/guest.sh small)"`:
#
#   GUEST_KERNEL  vmlinuz of Debian's linux-image-*-amd64 (fetched with
#                 `apt-get download`, unpacked with `dpkg-deb -x`, not installed)
#   GUEST_INITRD  a busybox initramfs: loads virtio_pci, virtio_blk and ext4 (with
#                 their dependencies, from the same package), mounts root= and
#                 switch_root's into it
#   GUEST_ROOT    the root file system: a raw ext4 image, made with mkfs.ext4 -d
#   GUEST_APPEND  the kernel command line to boot it with
#
# small:  64 MiB; busybox and an init that checks a 16 MiB random payload
#         against its sha256, prints VMIFS-BOOT-OK on ttyS0 and powers off.
# debian: 1 GiB; debootstrap --variant=minbase with systemd and udev; a unit at
#         multi-user.target prints VMIFS-BOOT-OK on ttyS0 and powers off.
#
# Boot one (writes go to a qcow2 overlay, the raw image stays untouched):
#   qemu-img create -f qcow2 -F raw -b "$GUEST_ROOT" vm.qcow2
#   qemu-system-x86_64 -accel tcg -m 512 -nographic -no-reboot \
#     -kernel "$GUEST_KERNEL" -initrd "$GUEST_INITRD" -append "$GUEST_APPEND" \
#     -drive file=vm.qcow2,if=virtio,format=qcow2
#
# Needs root, apt's package lists, and the tools scripts/install-qemu.sh installs.
set -euo pipefail

MARKER=VMIFS-BOOT-OK
APPEND="console=ttyS0 root=/dev/vda rw panic=-1"

die() {
  echo "guest.sh: $*" >&2
  exit 1
}
say() { echo "== $*" >&2; }

kind="${1:-small}"
case "$kind" in
small | debian) ;;
*) die "unknown guest '$kind' (expected small or debian)" ;;
esac
out="${2:-$HOME/.cache/vmifs/guest/$kind}"
script="$(readlink -f "$0")"
here="$(dirname "$script")"
hash="$(sha256sum <"$script" | cut -d' ' -f1)"

print_paths() {
  printf 'GUEST_KERNEL=%q\nGUEST_INITRD=%q\nGUEST_ROOT=%q\nGUEST_APPEND=%q\n' \
    "$out/vmlinuz" "$out/initrd.img" "$out/root.raw" "$APPEND"
}
cached() {
  [ "$(cat "$out/script.sha256" 2>/dev/null)" = "$hash" ] &&
    [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ] && [ -f "$out/root.raw" ]
}

if cached; then
  print_paths
  exit 0
fi

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap and root-owned files in the image)"
for tool in apt-get dpkg-deb mkfs.ext4 cpio gzip flock sha256sum; do
  command -v "$tool" >/dev/null || die "$tool is missing: run scripts/install-qemu.sh"
done
[ "$(dpkg-query -W -f='${db:Status-Status}' busybox-static 2>/dev/null)" = installed ] ||
  die "busybox-static is missing: run scripts/install-qemu.sh"
if [ "$kind" = debian ]; then
  command -v debootstrap >/dev/null || die "debootstrap is missing: run scripts/install-qemu.sh"
fi

mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
# One build at a time per output directory; a second caller waits, then uses it.
exec 9>"$out.lock"
flock 9
if cached; then
  print_paths
  exit 0
fi

tmp="$(mktemp -d "$out.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/out"

# --- kernel --------------------------------------------------------------------
kernel_pkg() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }'
}
pkg="$(kernel_pkg)"
if [ -z "$pkg" ]; then
  apt-get update -qq -o DPkg::Lock::Timeout=600
  pkg="$(kernel_pkg)"
fi
[ -n "$pkg" ] || die "apt knows no linux-image-amd64"
say "kernel: $pkg"
download() { (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >/dev/null); }
if ! download 2>/dev/null; then
  # Stale package lists name a kernel the mirror no longer has.
  apt-get update -qq -o DPkg::Lock::Timeout=600
  pkg="$(kernel_pkg)"
  download
fi
dpkg-deb -x "$tmp"/"$pkg"_*.deb "$tmp/kernel"
kver="${pkg#linux-image-}"
moddir="$tmp/kernel/lib/modules/$kver"
[ -d "$moddir" ] && [ -f "$tmp/kernel/boot/vmlinuz-$kver" ] || die "$pkg holds no kernel $kver"
cp "$tmp/kernel/boot/vmlinuz-$kver" "$tmp/out/vmlinuz"

# --- initramfs -----------------------------------------------------------------
# Modules in load order: each after the modules it depends on (the depends= field
# of its .modinfo). crc32c_generic is ext4's and jbd2's soft dependency
# ("pre: crypto-crc32c"), which depends= does not list.
declare -A modpath=() loaded=()
while IFS= read -r f; do
  n="$(basename "$f")"
  n="${n%%.ko*}"
  modpath["${n//-/_}"]="$f"
done < <(find "$moddir/kernel" -name '*.ko*')
modcat() {
  case "$1" in
  *.ko) cat "$1" ;;
  *.ko.xz) xz -dc "$1" ;;
  *.ko.zst) zstd -qdc "$1" ;;
  *.ko.gz) gzip -dc "$1" ;;
  *) die "unknown module format: $1" ;;
  esac
}
ird="$tmp/initrd"
mkdir -p "$ird/bin" "$ird/dev" "$ird/proc" "$ird/sys" "$ird/newroot" "$ird/lib/modules"
order=()
add_module() {
  local m="${1//-/_}" f dep
  [ -z "${loaded[$m]:-}" ] || return 0
  loaded[$m]=1
  if grep -q "/${m//_/[-_]}\.ko" "$moddir/modules.builtin"; then return 0; fi
  f="${modpath[$m]:-}"
  [ -n "$f" ] || die "$pkg has no module $m"
  modcat "$f" >"$ird/lib/modules/$m.ko"
  for dep in $(tr '\0' '\n' <"$ird/lib/modules/$m.ko" | sed -n 's/^depends=//p' | tr ',' ' '); do
    add_module "$dep"
  done
  order+=("$m.ko")
}
for m in virtio_pci virtio_blk crc32c_generic ext4; do add_module "$m"; done
printf '%s\n' "${order[@]}" >"$ird/lib/modules/order"
say "initramfs modules: ${order[*]}"
cp /bin/busybox "$ird/bin/busybox"
cat >"$ird/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
fail() {
  echo "initramfs: $*"
  poweroff -f
}
root=/dev/vda mode=ro init=/sbin/init
for arg in $(cat /proc/cmdline); do
  case "$arg" in
  root=*) root="${arg#root=}" ;;
  init=*) init="${arg#init=}" ;;
  ro | rw) mode="$arg" ;;
  esac
done
for m in $(cat /lib/modules/order); do
  insmod "/lib/modules/$m" || fail "cannot load $m"
done
i=0
while [ ! -b "$root" ]; do
  i=$((i + 1))
  [ "$i" -le 300 ] || fail "no $root after 30 s"
  sleep 0.1
done
mount -t ext4 -o "$mode" "$root" /newroot || fail "cannot mount $root"
[ -d /newroot/dev ] || fail "$root has no /dev"
mount -o move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot "$init"
EOF
chmod 755 "$ird/init"
(cd "$ird" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -9) >"$tmp/out/initrd.img"

# --- root file system ----------------------------------------------------------
rootfs="$tmp/rootfs"
case "$kind" in
small)
  size=64M
  mkdir -p "$rootfs/bin" "$rootfs/sbin" "$rootfs/dev" "$rootfs/proc" "$rootfs/sys" "$rootfs/tmp"
  cp /bin/busybox "$rootfs/bin/busybox"
  # Random, so every chunk of it is distinct; the guest checks it byte for byte.
  head -c 16M /dev/urandom >"$rootfs/payload"
  (cd "$rootfs" && sha256sum payload >payload.sha256)
  cat >"$rootfs/sbin/init" <<EOF
#!/bin/busybox sh
cd /
if /bin/busybox sha256sum -c -s payload.sha256; then
  echo $MARKER >/dev/ttyS0
else
  echo "VMIFS-BOOT-FAILED: payload checksum mismatch" >/dev/ttyS0
fi
/bin/busybox sync
/bin/busybox poweroff -f
EOF
  chmod 755 "$rootfs/sbin/init"
  ;;
debian)
  size=1G
  # shellcheck disable=SC1091
  suite="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
  read -r mirror _ <<<"$("$here/debian-mirror.sh" "$suite")"
  say "debootstrap $suite from $mirror"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,udev \
    "$suite" "$rootfs" "$mirror" >"$tmp/debootstrap.log" 2>&1 ||
    { tail -n 20 "$tmp/debootstrap.log" >&2; die "debootstrap failed"; }
  echo vmifs-guest >"$rootfs/etc/hostname"
  echo "/dev/vda / ext4 rw,errors=remount-ro 0 0" >"$rootfs/etc/fstab"
  cat >"$rootfs/etc/systemd/system/vmifs-boot-marker.service" <<EOF
[Unit]
Description=Report the finished boot on the serial console and power off
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo $MARKER >/dev/ttyS0'
ExecStart=/bin/systemctl --no-block poweroff

[Install]
WantedBy=multi-user.target
EOF
  mkdir -p "$rootfs/etc/systemd/system/multi-user.target.wants"
  ln -s ../vmifs-boot-marker.service "$rootfs/etc/systemd/system/multi-user.target.wants/"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs/debootstrap"
  ;;
esac
say "root file system: $size ext4"
truncate -s "$size" "$tmp/out/root.raw"
mkfs.ext4 -q -F -L "vmifs-$kind" -E root_owner=0:0 -d "$rootfs" "$tmp/out/root.raw"

echo "$hash" >"$tmp/out/script.sha256"
rm -rf "$out"
mv "$tmp/out" "$out"
print_paths
