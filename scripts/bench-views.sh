#!/usr/bin/env bash
# Side by side, in one run, rounds alternated: `vmifs get --format F` of an
# image from three loopback `vmifs serve` stores (k=4, m=2) against what one
# would do without it, `vmifs get` of the raw image then `qemu-img convert` to
# the same format (fixed VHD with force_size; monolithicFlat VMDK; qcow2).
# The image is a quarter all-zero MiB, the rest random. Prints medians and
# ratios, the stores' page cache warm.
#   scripts/bench-views.sh [MiB] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
MIB="${1:-512}"
RUNS="${2:-3}"
source scripts/lib.sh
start_stores 3 --no-fsync
{
  printf '[erasure]\ndata = 4\nparity = 2\nchunk_size = "256KiB"\n'
  store_config s0 s1 s2
} >"$WORK/config.toml"
export VMIFS_CONFIG="$WORK/config.toml"

# Every fourth MiB all zero.
python3 - "$WORK/image.raw" "$MIB" <<'PY'
import os, sys
with open(sys.argv[1], "wb") as f:
    for i in range(int(sys.argv[2])):
        f.write(bytes(1 << 20) if i % 4 == 3 else os.urandom(1 << 20))
PY
"$VMIFS" push "$WORK/image.raw" --name bench >/dev/null 2>&1

declare -A VIEW CONVERT
opts() { # qemu-img convert options for a format
  case "$1" in
    vhd) echo "-O vpc -o subformat=fixed,force_size=on" ;;
    vmdk) echo "-O vmdk -o subformat=monolithicFlat" ;;
    qcow2) echo "-O qcow2" ;;
  esac
}
for _ in $(seq "$RUNS"); do
  for f in vhd vmdk qcow2; do
    rm -rf "$WORK/out" && mkdir "$WORK/out"
    sync
    t0=$(now)
    "$VMIFS" get bench "$WORK/out/view.$f" --format "$f" 2>/dev/null
    t1=$(now)
    VIEW[$f]+="$(echo "$t1 - $t0" | bc -l) "
    qemu-img compare -q -f "$( [ $f = vhd ] && echo vpc || echo $f)" -F raw "$WORK/out/view.$f" "$WORK/image.raw"
    rm -rf "$WORK/out" && mkdir "$WORK/out"
    sync
    t0=$(now)
    "$VMIFS" get bench "$WORK/out/image.raw" 2>/dev/null
    # shellcheck disable=SC2046
    qemu-img convert -f raw $(opts "$f") "$WORK/out/image.raw" "$WORK/out/conv.$f"
    rm -f "$WORK/out/image.raw"
    t1=$(now)
    CONVERT[$f]+="$(echo "$t1 - $t0" | bc -l) "
  done
done
rm -rf "$WORK/out"
printf 'image: %d MiB (a quarter all-zero MiB), k=4 m=2, 256 KiB chunks, 3 loopback stores, median of %d alternated rounds\n' "$MIB" "$RUNS"
for f in vhd vmdk qcow2; do
  v=$(printf '%s\n' ${VIEW[$f]} | median)
  c=$(printf '%s\n' ${CONVERT[$f]} | median)
  printf '%-5s get --format %6.2f s | get + qemu-img convert %6.2f s | speed-up %.2fx\n' "$f" "$v" "$c" "$(echo "$c / $v" | bc -l)"
done
