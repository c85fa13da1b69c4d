#!/usr/bin/env bash
# Prints "URI [KEYRING]": the Debian mirror (and its Signed-By keyring, if any)
# that apt's sources use for SUITE (default: this release, from /etc/os-release),
# read from deb822 *.sources files or one-line *.list files.
set -euo pipefail
suite="${1:-}"
if [ -z "$suite" ]; then
  # shellcheck disable=SC1091
  . /etc/os-release
  suite="${VERSION_CODENAME:-}"
fi
[ -n "$suite" ] || { echo "debian-mirror.sh: no release codename in /etc/os-release" >&2; exit 1; }

found=$(
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$suite" '
      function flush() {
        if (!done && uri != "" && enabled && (" " suites " ") ~ (" " suite " ")) { print uri, key; done = 1; exit }
        uri = ""; suites = ""; key = ""; enabled = 1
      }
      BEGIN { enabled = 1 }
      /^[[:space:]]*$/ { flush(); next }
      tolower($1) == "uris:" { uri = $2 }
      tolower($1) == "suites:" { $1 = ""; suites = $0 }
      tolower($1) == "signed-by:" { key = $2 }
      tolower($1) == "enabled:" && tolower($2) == "no" { enabled = 0 }
      END { flush() }
    ' "$f"
  done
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    sed -n "s/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\)[[:space:]]\+${suite}[[:space:]].*/\2/p" || true
)
found=$(grep -m1 . <<<"$found" || true)
[ -n "$found" ] || { echo "debian-mirror.sh: no mirror for '$suite' in apt's sources" >&2; exit 1; }
echo "$found"
