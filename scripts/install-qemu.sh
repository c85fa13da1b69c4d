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

need_qemu=$(missing "${qemu_pkgs[@]}")
need_tools=$(missing "${tool_pkgs[@]}")
[ -z "$need_qemu$need_tools" ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "install-qemu.sh: must run as root to install: $need_qemu $need_tools" >&2
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

# The mirror and keyring of the release's own sources (deb822 or one-line form).
mirror_of_release() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$codename" '
      function flush() {
        if (uri != "" && (" " suites " ") ~ (" " suite " ")) { print uri, key; found = 1; exit }
        uri = ""; suites = ""; key = ""
      }
      /^[[:space:]]*$/ { flush(); next }
      tolower($1) == "uris:" { uri = $2 }
      tolower($1) == "suites:" { $1 = ""; suites = $0 }
      tolower($1) == "signed-by:" { key = $2 }
      END { if (!found) flush() }
    ' "$f"
  done | head -n1 | grep . && return
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    sed -n "s/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\)[[:space:]]\+$codename[[:space:]].*/\2/p" |
    head -n1 | grep .
}

if [ -n "$need_qemu" ] &&
  ! grep -rqsE "^[^#]*[[:space:]]$backports([[:space:]]|$)" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  read -r uri key < <(mirror_of_release) || {
    echo "install-qemu.sh: no Debian '$codename' mirror found in apt's sources" >&2
    exit 1
  }
  {
    echo "Types: deb"
    echo "URIs: $uri"
    echo "Suites: $backports"
    echo "Components: main"
    if [ -n "${key:-}" ]; then echo "Signed-By: $key"; fi
  } >"/etc/apt/sources.list.d/$backports.sources"
  echo "== added $backports ($uri) to apt's sources"
fi

echo "== installing $(echo $need_qemu $need_tools)"
apt-get update -qq -o DPkg::Lock::Timeout=600
if [ -n "$need_qemu" ]; then
  # All three from backports together, so their versions match.
  apt-get install "${apt_opts[@]}" -t "$backports" "${qemu_pkgs[@]}" >/dev/null 2> >(grep -v '^debconf: delaying' >&2)
fi
if [ -n "$need_tools" ]; then
  # shellcheck disable=SC2086
  apt-get install "${apt_opts[@]}" $need_tools >/dev/null 2> >(grep -v '^debconf: delaying' >&2)
fi
qemu-system-x86_64 --version | head -n1
