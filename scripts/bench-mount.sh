#!/usr/bin/env bash
# Reads through the mount, side by side in one run, same image, same stores:
#  - cold sequential read through the mount vs curl of the same bytes (one plain
#    file) from one of the same loopback servers;
#  - warm sequential read (chunk cache full, page cache dropped) vs a local file;
#  - 4 KiB random-read latency p50/p99 through the mount, cold and warm.
#   scripts/bench-mount.sh [MiB]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vmifs/target}"
MIB="${1:-1024}"
cargo build --release --quiet
VMIFS="$CARGO_TARGET_DIR/release/vmifs"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/vmifs-bench.XXXXXX")"
MNT="$WORK/mnt"
PIDS=()
MOUNT_PID=
cleanup() {
  if grep -q " $MNT " /proc/mounts 2>/dev/null; then umount -l "$MNT" 2>/dev/null || true; fi
  [ -n "$MOUNT_PID" ] && kill "$MOUNT_PID" 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

PORTS=()
for i in 0 1 2; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$VMIFS" serve --no-fsync --root "$WORK/store-$i" --listen "127.0.0.1:$port" 2>/dev/null &
  PIDS+=($!)
  PORTS+=("$port")
done
for port in "${PORTS[@]}"; do
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.1; done
done
{
  printf '[erasure]\ndata = 4\nparity = 2\nchunk_size = "256KiB"\n'
  for i in 0 1 2; do printf '[[store]]\nname = "s%s"\nurl = "http://127.0.0.1:%s"\n' "$i" "${PORTS[$i]}"; done
  printf '[cache]\ndir = "%s"\nmax_size = "%dMiB"\n' "$WORK/cache" "$((MIB * 2))"
} >"$WORK/config.toml"
export VMIFS_CONFIG="$WORK/config.toml"

head -c "$((MIB << 20))" /dev/urandom >"$WORK/image.raw"
mkdir -p "$WORK/store-0/plain" "$MNT"
cp "$WORK/image.raw" "$WORK/store-0/plain/image.raw"
"$VMIFS" push "$WORK/image.raw" --name bench >/dev/null 2>&1

now() { date +%s.%N; }
mount_it() {
  "$VMIFS" mount "$MNT" 2>"$WORK/mount.log" &
  MOUNT_PID=$!
  for _ in $(seq 200); do [ -e "$MNT/bench/latest.raw" ] && return; sleep 0.05; done
  echo "mount did not come up" >&2; cat "$WORK/mount.log" >&2; exit 1
}
unmount_it() { kill -TERM "$MOUNT_PID"; wait "$MOUNT_PID" 2>/dev/null || true; MOUNT_PID=; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
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

drop
t0=$(now); curl -sf -o /dev/null "http://127.0.0.1:${PORTS[0]}/plain/image.raw"; t1=$(now)
curl_s=$(echo "$t1 - $t0" | bc -l)

mount_it
drop
cold_s=$(seq_read "$MNT/bench/latest.raw")
unmount_it

mount_it
drop
warm_s=$(seq_read "$MNT/bench/latest.raw")
drop
local_s=$(seq_read "$WORK/image.raw")
drop
read -r warm_p50 warm_p99 < <(latency "$MNT/bench/latest.raw" 2000)
unmount_it

rm -rf "$WORK/cache"
mount_it
drop
read -r cold_p50 cold_p99 < <(latency "$MNT/bench/latest.raw" 300)
unmount_it

rate() { echo "$MIB * 1.048576 / $1" | bc -l; }
printf 'image: %d MiB random data, k=4 m=2, 256 KiB chunks, 3 loopback stores\n' "$MIB"
printf 'cold sequential, mount: %6.2f s %6.0f MB/s | curl same bytes: %6.2f s %6.0f MB/s | ratio %.2fx\n' \
  "$cold_s" "$(rate "$cold_s")" "$curl_s" "$(rate "$curl_s")" "$(echo "$curl_s / $cold_s" | bc -l)"
printf 'warm sequential, mount: %6.2f s %6.0f MB/s | local file:      %6.2f s %6.0f MB/s | ratio %.2fx\n' \
  "$warm_s" "$(rate "$warm_s")" "$local_s" "$(rate "$local_s")" "$(echo "$local_s / $warm_s" | bc -l)"
printf '4 KiB random reads, cold: p50 %s ms, p99 %s ms (300 reads)\n' "$cold_p50" "$cold_p99"
printf '4 KiB random reads, warm: p50 %s ms, p99 %s ms (2000 reads, page cache dropped)\n' "$warm_p50" "$warm_p99"
