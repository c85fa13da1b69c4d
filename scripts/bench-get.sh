#!/usr/bin/env bash
# Side-by-side, in one run: `vmifs push` throughput, and `vmifs get` of an image
# from three loopback `vmifs serve` stores (k=4, m=2) against `curl` of the same
# bytes as one plain file from one of those servers. Prints medians and ratios,
# with the servers' page cache warm (everything in memory) and cold (dropped
# before each download, so both read from disk).
#   scripts/bench-get.sh [MiB] [runs]      (FORMAT=1 pushes format 1: one object per shard)
#   BENCH_GET_CONFIG='pack_size = "32MiB"' scripts/bench-get.sh 512   # compare a setting
set -euo pipefail
cd "$(dirname "$0")/.."
MIB="${1:-1024}"
RUNS="${2:-3}"
source scripts/lib.sh
ACCESS_LOGS=1 start_stores 3 --no-fsync
{
  printf '[erasure]\ndata = 4\nparity = 2\nchunk_size = "256KiB"\n[push]\nformat = %s\n' "${FORMAT:-2}"
  # Extra settings to compare: lines of the [push] table, then other tables.
  printf '%s\n' "${BENCH_GET_CONFIG:-}"
  store_config s0 s1 s2
} >"$WORK/config.toml"
export VMIFS_CONFIG="$WORK/config.toml"

head -c "$((MIB << 20))" /dev/urandom >"$WORK/image.raw"
mkdir -p "$WORK/store-0/plain"
cp "$WORK/image.raw" "$WORK/store-0/plain/image.raw"


t0=$(now)
"$VMIFS" push "$WORK/image.raw" --name bench >/dev/null 2>&1
t1=$(now)
push_s=$(echo "$t1 - $t0" | bc -l)

measure() { # $1: warm|cold
  local get_times=() curl_times=() t0 t1
  for _ in $(seq "$RUNS"); do
    rm -f "$WORK/out.raw" "$WORK/curl.raw"
    if [ "$1" = cold ]; then drop_caches; else sync; fi
    t0=$(now); curl -sf -o "$WORK/curl.raw" "http://127.0.0.1:${PORTS[0]}/plain/image.raw"; t1=$(now)
    curl_times+=("$(echo "$t1 - $t0" | bc -l)")
    rm -f "$WORK/curl.raw"
    if [ "$1" = cold ]; then drop_caches; else sync; fi
    t0=$(now); "$VMIFS" get bench "$WORK/out.raw" 2>/dev/null; t1=$(now)
    get_times+=("$(echo "$t1 - $t0" | bc -l)")
    cmp "$WORK/out.raw" "$WORK/image.raw"
  done
  local g c
  g=$(printf '%s\n' "${get_times[@]}" | median)
  c=$(printf '%s\n' "${curl_times[@]}" | median)
  printf '%s server cache: curl %6.2f s %6.0f MB/s | vmifs get %6.2f s %6.0f MB/s | get/curl speed %.2fx\n' \
    "$1" "$c" "$(echo "$MIB * 1.048576 / $c" | bc -l)" "$g" "$(echo "$MIB * 1.048576 / $g" | bc -l)" "$(echo "$c / $g" | bc -l)"
}
printf 'image: %d MiB random data, k=4 m=2, 256 KiB chunks, 3 loopback stores, median of %d runs\n' "$MIB" "$RUNS"
printf 'push: %6.2f s  %6.0f MB/s\n' "$push_s" "$(echo "$MIB * 1.048576 / $push_s" | bc -l)"
for i in 0 1 2; do
  # Each stored shard object or pack was one PUT.
  objs=$({ find "$WORK/store-$i/shards" "$WORK/store-$i/packs" -type f 2>/dev/null || true; } | wc -l)
  printf 'store %d: %d shard objects or packs = %.0f PUTs per GiB\n' "$i" "$objs" "$(echo "$objs * 1024 / $MIB" | bc -l)"
done
measure warm
measure cold
for i in 0 1 2; do
  # Shard and pack GETs of the 2 * RUNS downloads.
  gets=$(store_gets "$i")
  printf 'store %d: %.0f GETs per GiB per get\n' "$i" "$(echo "$gets / (2 * $RUNS) * 1024 / $MIB" | bc -l)"
done
