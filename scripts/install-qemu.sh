#!/usr/bin/env bash
# Installs what booting a guest needs: QEMU (qemu-system-x86, qemu-block-extra,
# with qemu-utils from the same suite) and the tools scripts/guest.sh builds
# guests with (debootstrap, busybox-static, e2fsprogs, cpio). Runs as root on
# Debian; prints nothing when everything is already installed.
#
# QEMU comes from <codename>-backports, added to apt's sources with the mirror
# of the existing Debian sources: a qemu-utils from backports must not be
# replaced by the older one of the release (a mixed install would not start).
set -euo pipefail

qemu_pkgs=(qemu-system-x86 qemu-block-extra qemu-utils)
tool_pkgs=(debootstrap busybox-static e2fsprogs cpio)

missing() {
  local p
  for p in "$@"; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || echo "$p"
  done
}

mapfile -t need_qemu < <(missing "${qemu_pkgs[@]}")
mapfile -t need_tools < <(missing "${tool_pkgs[@]}")
((${#need_qemu[@]} + ${#need_tools[@]})) || exit 0

if [ "$(id -u)" != 0 ]; then
  echo "install-qemu.sh: must run as root to install: ${need_qemu[*]} ${need_tools[*]}" >&2
  exit 1
fi

# shellcheck disable=SC1091
. /etc/os-release
codename="${VERSION_CODENAME:-}"
if [ "${ID:-}" != debian ] || [ -z "$codename" ]; then
  echo "install-qemu.sh: needs Debian (found ${PRETTY_NAME:-an unknown system})" >&2
  exit 1
fi
backports="$codename-backports"
apt_opts=(-y -qq -o DPkg::Lock::Timeout=600)
export DEBIAN_FRONTEND=noninteractive

if ((${#need_qemu[@]})) &&
  ! grep -rqsE "^[^#]*[[:space:]]$backports([[:space:]]|$)" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  mirror=$("$(dirname "$0")/debian-mirror.sh" "$codename")
  read -r uri key <<<"$mirror"
  {
    echo "Types: deb"
    echo "URIs: $uri"
    echo "Suites: $backports"
    echo "Components: main"
    if [ -n "${key:-}" ]; then echo "Signed-By: $key"; fi
  } >"/etc/apt/sources.list.d/$backports.sources"
  echo "== added $backports ($uri) to apt's sources"
fi

all=("${need_qemu[@]}" "${need_tools[@]}")
echo "== installing ${all[*]}"
apt-get update -qq -o DPkg::Lock::Timeout=600
if ((${#need_qemu[@]})); then
  # All three from backports together, so their versions match.
  apt-get install "${apt_opts[@]}" -t "$backports" "${qemu_pkgs[@]}" >/dev/null 2> >(grep -v '^debconf: delaying' >&2)
fi
if ((${#need_tools[@]})); then
  apt-get install "${apt_opts[@]}" "${need_tools[@]}" >/dev/null 2> >(grep -v '^debconf: delaying' >&2)
fi
qemu-system-x86_64 --version | head -n1
