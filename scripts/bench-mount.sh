#!/usr/bin/env bash
# Reads through the mount, side by side in one run, same image, same stores:
#  - cold sequential read through the mount vs curl of the same bytes (one plain
#    file) from one of the same loopback servers;
#  - warm sequential read (chunk cache full, page cache dropped) vs a local file:
#    through the daemon on the first read after a start (every chunk hashed
#    once), through the daemon again (verified), and by FUSE passthrough;
#  - 4 KiB random-read latency p50/p99 through the mount: cold, warm through
#    the daemon, warm by passthrough.
#   scripts/bench-mount.sh [MiB]
#   BENCH_MOUNT_CONFIG=$'[mount]\nkernel_readahead = "128KiB"' scripts/bench-mount.sh 512
set -euo pipefail
cd "$(dirname "$0")/.."
MIB="${1:-1024}"
source scripts/lib.sh
MOUNT_PID=
ACCESS_LOGS=1 start_stores 3 --no-fsync
{
  printf '[erasure]\ndata = 4\nparity = 2\nchunk_size = "256KiB"\n'
  store_config s0 s1 s2
  printf '[cache]\ndir = "%s"\nmax_size = "%dMiB"\n' "$WORK/cache" "$((MIB * 2))"
  # Extra settings to compare, e.g. BENCH_MOUNT_CONFIG=$'[mount]\nthreads = 1'
  printf '%s\n' "${BENCH_MOUNT_CONFIG:-}"
} >"$WORK/config.toml"
# Hydration (on by default) would race the cold read: off unless the extra settings say otherwise.
if ! grep -q '^hydrate *=' "$WORK/config.toml"; then
  if grep -q '^\[mount\]' "$WORK/config.toml"; then
    sed -i '/^\[mount\]/a hydrate = false' "$WORK/config.toml"
  else
    printf '[mount]\nhydrate = false\n' >>"$WORK/config.toml"
  fi
fi
# The same with passthrough off (into an existing [mount] table if there is one).
if grep -q '^\[mount\]' "$WORK/config.toml"; then
  sed '/^\[mount\]/a passthrough = false' "$WORK/config.toml" >"$WORK/config-fuse.toml"
else
  { cat "$WORK/config.toml"; printf '[mount]\npassthrough = false\n'; } >"$WORK/config-fuse.toml"
fi
export VMIFS_CONFIG="$WORK/config.toml"

head -c "$((MIB << 20))" /dev/urandom >"$WORK/image.raw"
mkdir -p "$WORK/store-0/plain" "$MNT"
cp "$WORK/image.raw" "$WORK/store-0/plain/image.raw"
"$VMIFS" push "$WORK/image.raw" --name bench >/dev/null 2>&1

mount_it() {
  "$VMIFS" mount "$MNT" 2>"$WORK/mount.log" &
  MOUNT_PID=$!
  PIDS+=("$MOUNT_PID")
  for _ in $(seq 200); do [ -e "$MNT/bench/latest.raw" ] && return; sleep 0.05; done
  echo "mount did not come up" >&2; cat "$WORK/mount.log" >&2; exit 1
}
unmount_it() { kill -TERM "$MOUNT_PID"; wait "$MOUNT_PID" 2>/dev/null || true; MOUNT_PID=; }
seq_read() { local t0 t1; t0=$(now); dd if="$1" of=/dev/null bs=1M status=none; t1=$(now); echo "$t1 - $t0" | bc -l; }
latency() {
  python3 - "$1" "$2" <<'PY'
import os, random, sys, time
path, n = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size
random.seed(7)
lat = []
for _ in range(n):
    off = random.randrange(0, size // 4096) * 4096
    t = time.perf_counter()
    assert len(os.pread(fd, 4096, off)) == 4096
    lat.append(time.perf_counter() - t)
lat.sort()
print(f"{lat[len(lat)//2]*1000:.3f} {lat[int(len(lat)*0.99)]*1000:.3f}")
PY
}

drop_caches
t0=$(now); curl -sf -o /dev/null "http://127.0.0.1:${PORTS[0]}/plain/image.raw"; t1=$(now)
curl_s=$(echo "$t1 - $t0" | bc -l)

all_store_gets() { for i in 0 1 2; do store_gets "$i"; done; }
mount_it
drop_caches
gets_before=($(all_store_gets))
cold_s=$(seq_read "$MNT/bench/latest.raw")
gets_after=($(all_store_gets))
unmount_it

passthrough_files() {
  (exec 3<"$MNT/bench/latest.raw"
   "$VMIFS" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["passthrough_files"])')
}
# Warm through the daemon: the first read after a start hashes every chunk.
VMIFS_CONFIG="$WORK/config-fuse.toml" mount_it
drop_caches
first_s=$(seq_read "$MNT/bench/latest.raw")
drop_caches
warm_s=$(seq_read "$MNT/bench/latest.raw")
drop_caches
local_s=$(seq_read "$WORK/image.raw")
drop_caches
read -r warm_p50 warm_p99 < <(latency "$MNT/bench/latest.raw" 2000)
unmount_it
# Warm by passthrough: the first open after a start reads through the daemon
# (and hashes); once the file is verified, opens are passthrough.
mount_it
seq_read "$MNT/bench/latest.raw" >/dev/null
pt=$(passthrough_files)
# Three alternated rounds: the local disk's own rate moves from run to run.
pt_rounds=()
for _ in 1 2 3; do
  drop_caches
  pt_s=$(seq_read "$MNT/bench/latest.raw")
  drop_caches
  local2_s=$(seq_read "$WORK/image.raw")
  pt_rounds+=("$(printf '%.2f/%.2f' "$pt_s" "$local2_s")")
done
drop_caches
read -r pt_p50 pt_p99 < <(latency "$MNT/bench/latest.raw" 2000)
unmount_it

rm -rf "$WORK/cache"
mount_it
drop_caches
read -r cold_p50 cold_p99 < <(latency "$MNT/bench/latest.raw" 300)
unmount_it

rate() { echo "$MIB * 1.048576 / $1" | bc -l; }
printf 'image: %d MiB random data, k=4 m=2, 256 KiB chunks, 3 loopback stores\n' "$MIB"
printf 'cold sequential, mount: %6.2f s %6.0f MB/s | curl same bytes: %6.2f s %6.0f MB/s | ratio %.2fx\n' \
  "$cold_s" "$(rate "$cold_s")" "$curl_s" "$(rate "$curl_s")" "$(echo "$curl_s / $cold_s" | bc -l)"
printf 'warm sequential, first read after a start: %6.2f s %6.0f MB/s | local file: %6.2f s %6.0f MB/s | ratio %.2fx\n' \
  "$first_s" "$(rate "$first_s")" "$local_s" "$(rate "$local_s")" "$(echo "$local_s / $first_s" | bc -l)"
printf 'warm sequential, through the daemon:       %6.2f s %6.0f MB/s | local file: %6.2f s %6.0f MB/s | ratio %.2fx\n' \
  "$warm_s" "$(rate "$warm_s")" "$local_s" "$(rate "$local_s")" "$(echo "$local_s / $warm_s" | bc -l)"
printf 'warm sequential, passthrough (%s open):     %6.2f s %6.0f MB/s | local file: %6.2f s %6.0f MB/s | ratio %.2fx (rounds, passthrough/local s: %s)\n' \
  "$pt" "$pt_s" "$(rate "$pt_s")" "$local2_s" "$(rate "$local2_s")" "$(echo "$local2_s / $pt_s" | bc -l)" "${pt_rounds[*]}"
for i in 0 1 2; do
  printf 'store %d: %.0f GETs per GiB for the cold sequential read\n' "$i" \
    "$(echo "(${gets_after[$i]} - ${gets_before[$i]}) * 1024 / $MIB" | bc -l)"
done
printf '4 KiB random reads, cold: p50 %s ms, p99 %s ms (300 reads)\n' "$cold_p50" "$cold_p99"
printf '4 KiB random reads, warm through the daemon: p50 %s ms, p99 %s ms (2000 reads, page cache dropped)\n' "$warm_p50" "$warm_p99"
printf '4 KiB random reads, warm by passthrough:     p50 %s ms, p99 %s ms (2000 reads, page cache dropped)\n' "$pt_p50" "$pt_p99"
local_lat=$(drop_caches; latency "$WORK/image.raw" 2000)
printf '4 KiB random reads, local file:              p50 %s ms, p99 %s ms\n' $local_lat
