#!/usr/bin/env bash
# Installs what scripts/bench-boot.py needs: QEMU and the guest tools
# (scripts/install-qemu.sh), fuse3, curl, the alternatives it compares vmifs with
# (rclone, nbdkit, httpdirfs) and python3-libnbd for checking nbdkit's bytes.
# Runs as root on Debian; prints nothing when everything is already installed.
set -euo pipefail

"$(dirname "$0")/install-qemu.sh"
missing=()
for p in rclone nbdkit httpdirfs fuse3 curl python3-libnbd; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
done
[ "${#missing[@]}" -gt 0 ] || exit 0
[ "$(id -u)" = 0 ] || { echo "install-bench-tools.sh: must run as root to install: ${missing[*]}" >&2; exit 1; }
echo "== installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
install() {
  apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >/dev/null
}
# Package lists older than the mirror name versions it no longer has.
install || { apt-get update -qq -o DPkg::Lock::Timeout=600 && install; }
