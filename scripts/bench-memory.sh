#!/usr/bin/env bash
# Peak memory (RSS) of `vmifs push`, `vmifs get` and the mount daemon against
# image size, in one run: images of each size (MiB, random data) pushed to
# three loopback stores (k=4 m=2, 256 KiB chunks), fetched with `get`, then
# read cold and again warm through the mount. Memory should stay flat as the
# image grows.
#   scripts/bench-memory.sh [MiB...]        (default: 1024 4096)
#   BENCH_CACHE_MEMORY=16MiB scripts/bench-memory.sh 1024 4096   # the in-memory set
#   BENCH_BEFORE=path/to/older/vmifs scripts/bench-memory.sh   # its get and mount too,
#                                      # on the same images, in the same run
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -gt 0 ]; then SIZES=("$@"); else SIZES=(1024 4096); fi
source scripts/lib.sh
MOUNT_PID=
start_stores 3 --no-fsync
{
  printf '[erasure]\ndata = 4\nparity = 2\nchunk_size = "256KiB"\n'
  store_config s0 s1 s2
  printf '[cache]\ndir = "%s"\nmax_size = "16GiB"\nmemory = "%s"\n' "$WORK/cache" "${BENCH_CACHE_MEMORY:-64MiB}"
  printf '[mount]\nhydrate = false\n' # on by default; the reads below are the cold ones
} >"$WORK/config.toml"
export VMIFS_CONFIG="$WORK/config.toml"
mkdir -p "$MNT"

peak() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; } # KiB
mib() { echo "$1 / 1024" | bc; }
# read_through_mount NAME [BINARY]: start the daemon, read the whole image
# through it (page cache dropped), compare it, stop the daemon; PEAK = its
# peak RSS (KiB).
read_through_mount() {
  "${2:-$VMIFS}" mount "$MNT" 2>"$WORK/mount.log" &
  MOUNT_PID=$!
  PIDS+=("$MOUNT_PID")
  for _ in $(seq 200); do [ -e "$MNT/$1/latest.raw" ] && break; sleep 0.05; done
  drop_caches
  cmp "$MNT/$1/latest.raw" "$WORK/image.raw"
  PEAK=$(awk '/VmHWM/ {print $2}' "/proc/$MOUNT_PID/status")
  kill -TERM "$MOUNT_PID"
  wait "$MOUNT_PID" 2>/dev/null || true
}
# get_and_mount NAME [BINARY]: `get` the image, then read it cold and warm
# through the mount; prints the three peaks in MiB.
get_and_mount() {
  local get_kib cold_kib
  rm -f "$WORK/out.raw"
  get_kib=$(peak "${2:-$VMIFS}" get "$1" "$WORK/out.raw")
  cmp "$WORK/out.raw" "$WORK/image.raw"
  rm -f "$WORK/out.raw"
  rm -rf "$WORK/cache"
  read_through_mount "$1" "${2:-}"
  cold_kib=$PEAK
  read_through_mount "$1" "${2:-}"
  printf '%8d MiB %14d MiB %14d MiB' "$(mib "$get_kib")" "$(mib "$cold_kib")" "$(mib "$PEAK")"
}
printf '%8s %12s %12s %18s %18s' "image" "push RSS" "get RSS" "mount RSS, cold" "mount RSS, warm"
if [ -n "${BENCH_BEFORE:-}" ]; then printf ' %12s %18s %18s' "before: get" "mount, cold" "mount, warm"; fi
echo
for size in "${SIZES[@]}"; do
  name="img$size"
  head -c "$((size << 20))" /dev/urandom >"$WORK/image.raw"
  push_kib=$(peak "$VMIFS" push "$WORK/image.raw" --name "$name")
  printf '%5d MiB %8d MiB' "$size" "$(mib "$push_kib")"
  get_and_mount "$name"
  if [ -n "${BENCH_BEFORE:-}" ]; then get_and_mount "$name" "$BENCH_BEFORE"; fi
  echo
  rm -f "$WORK/image.raw"
done
