#!/usr/bin/env bash
# scripts/boot.sh RAW [small|debian]
#
# Boots the guest root image RAW (for instance a file on a vmifs mount) the way
# libvirt does: from a fresh local qcow2 overlay whose backing file is RAW
# (backing_fmt=raw, or BOOT_BACKING_FORMAT: vpc, vmdk or qcow2 for a format
# view of the image), which takes every write. QEMU runs under TCG with the kernel
# and initramfs of `scripts/guest.sh KIND` (default small), or of GUEST_KERNEL,
# GUEST_INITRD and GUEST_APPEND when they are set.
#
# Prints the seconds from QEMU's start to the guest's VMIFS-BOOT-OK line on its
# serial console; exits non-zero, with the end of the console, when the marker
# does not come within BOOT_TIMEOUT seconds (default 300).
#
# Environment: BOOT_TIMEOUT, BOOT_MEM (MiB, default 512), BOOT_LOG (keep the
# serial console in this file), BOOT_BACKING_FORMAT (default raw).
set -euo pipefail

MARKER=VMIFS-BOOT-OK
die() {
  echo "boot.sh: $*" >&2
  exit 1
}

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: boot.sh RAW [small|debian]"
raw="$1"
kind="${2:-small}"
case "$kind" in small | debian) ;; *) die "unknown guest '$kind' (expected small or debian)" ;; esac
case "$raw" in /*) ;; *) raw="$PWD/$raw" ;; esac
[ -f "$raw" ] && [ -r "$raw" ] || die "$raw: not a readable file"
timeout_s="${BOOT_TIMEOUT:-300}"
backing_fmt="${BOOT_BACKING_FORMAT:-raw}"
case "$backing_fmt" in raw | vpc | vmdk | qcow2) ;; *) die "BOOT_BACKING_FORMAT must be raw, vpc, vmdk or qcow2" ;; esac
[[ "$timeout_s" =~ ^[0-9]+$ ]] || die "BOOT_TIMEOUT must be whole seconds"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is missing: run scripts/install-qemu.sh"

if [ -z "${GUEST_KERNEL:-}" ] || [ -z "${GUEST_INITRD:-}" ]; then
  guest="$("$(dirname "$0")/guest.sh" "$kind")" || die "cannot build the $kind guest"
  eval "$guest"
fi
append="${GUEST_APPEND:-console=ttyS0 root=/dev/vda rw panic=-1}"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/vmifs-boot.XXXXXX")"
qemu_pid=
cleanup() {
  if [ -n "$qemu_pid" ]; then kill "$qemu_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

qemu-img create -q -f qcow2 -F "$backing_fmt" -b "$raw" "$tmp/overlay.qcow2"
log="${BOOT_LOG:-$tmp/console.log}"
: >"$log"

# The serial console goes to a FIFO read line by line, so the marker is timed
# when it is printed; QEMU's own errors go to a file. The FIFO is opened
# read-write here so that neither side blocks on open.
mkfifo "$tmp/console"
exec 3<>"$tmp/console"
start=$(date +%s.%N)
deadline=$(($(date +%s) + timeout_s))
qemu-system-x86_64 -accel tcg -m "${BOOT_MEM:-512}" -nodefaults -no-user-config \
  -display none -no-reboot -serial "file:$tmp/console" -nic none \
  -kernel "$GUEST_KERNEL" -initrd "$GUEST_INITRD" -append "$append" \
  -drive "file=$tmp/overlay.qcow2,if=virtio,format=qcow2" \
  </dev/null >"$tmp/qemu.err" 2>&1 &
qemu_pid=$!

took='' pending=''
while [ -z "$took" ] && [ "$(date +%s)" -lt "$deadline" ]; do
  if IFS= read -r -t 1 line <&3; then
    line="$pending$line" pending=
    printf '%s\n' "$line" >>"$log"
    if [[ "$line" == *"$MARKER"* ]]; then took=$(echo "$(date +%s.%N) - $start" | bc); fi
  else
    # A timeout keeps what part of a line had come.
    pending="$pending$line"
    kill -0 "$qemu_pid" 2>/dev/null || break
  fi
done
[ -z "$pending" ] || printf '%s\n' "$pending" >>"$log"

if [ -n "$took" ]; then
  # The guest powers off after the marker; give it a moment, then stop it.
  for _ in $(seq 50); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.1; done
  kill "$qemu_pid" 2>/dev/null || true
  wait "$qemu_pid" 2>/dev/null || true
  qemu_pid=
  printf '%.2f\n' "$took"
  exit 0
fi
{
  if kill -0 "$qemu_pid" 2>/dev/null; then
    echo "boot.sh: no $MARKER within ${timeout_s}s; QEMU said:"
  else
    echo "boot.sh: the guest stopped without printing $MARKER; QEMU said:"
  fi
  tail -n 5 "$tmp/qemu.err"
  echo "boot.sh: last lines of the serial console:"
  tail -n 25 "$log"
} >&2
exit 1
