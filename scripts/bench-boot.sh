#!/usr/bin/env bash
# Boots a real VM from an image behind emulated WAN links, side by side in one
# run: vmifs against what users would use instead.
#
#   scripts/bench-boot.sh
#   BENCH_RUNS=5 BENCH_BOOT_MD=boot.md scripts/bench-boot.sh
#
# Three `vmifs serve` stores, each behind its own scripts/wan-proxy.py link
# (default RTT 10, 40 and 80 ms, 100 Mbit/s each way). The Debian guest of
# scripts/guest.sh is pushed with k=4 m=2 (two shards of every chunk on each
# store), and its raw file is also dropped into every store's root as a plain
# HTTP file (plain/guest.raw). Each boot goes through a fresh qcow2 overlay whose
# backing file (backing_fmt=raw) is the image under test, as libvirt does, and
# is timed from QEMU's start to VMIFS-BOOT-OK on the serial console. The page
# cache is dropped before every boot. Variants:
#
#   a        curl the whole image from the nearest store, then boot the local
#            copy (time = download + boot)
#   b        QEMU's http block driver on the nearest store's plain file
#   c        vmifs mount, empty cache, no boot profile
#   c2       vmifs mount, empty cache, with the image's boot profile (recorded
#            once with `vmifs profile record` after a first boot); n/a when
#            this vmifs has no boot profiles
#   d        vmifs mount, warm cache: a second boot on the mount of run c
#   e        a local file (the floor)
#   rclone   rclone mount of the plain file (http remote, --vfs-cache-mode full)
#   nbdkit   nbdkit's curl plugin on the plain file; QEMU's NBD client over a
#            unix socket
#   httpdirfs  httpdirfs --single-file-mode --cache on the plain file
#
# Before the timed boots, every lazy variant's data is checked on a cold
# instance: random ranges (and the ranges this boot reads) read through it
# must equal the image. Wrong bytes are reported, not hidden.
#
# Environment:
#   BENCH_RUNS       boots per variant (default 3)
#   BENCH_VARIANTS   subset, in the order run within each round
#                    (default "e a b c d c2 rclone nbdkit httpdirfs")
#   BENCH_RTTS       RTT per store in ms, nearest first (default "10 40 80")
#   BENCH_RATE       link rate per store and direction (default 100Mbit)
#   BENCH_GUEST      guest kind of scripts/guest.sh (default debian)
#   BENCH_BOOT_MD    also write the result table as markdown to this file
#   BENCH_BOOT_OUT   keep per-run JSON, console logs, read traces and the chunk
#                    trace summary here (default: a new directory under $TMPDIR)
#   BENCH_MOUNT_EXTRA  more [mount] settings for the vmifs variants, e.g.
#                    $'readahead_chunks = 0\nkernel_readahead = "128KiB"'
#   BOOT_TIMEOUT     seconds allowed per boot (default 300)
#   VMIFS_BENCH_LOG  log filter of the vmifs daemon (default info)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${BENCH_RUNS:-3}"
VARIANTS="${BENCH_VARIANTS:-e a b c d c2 rclone nbdkit httpdirfs}"
read -r -a RTTS <<<"${BENCH_RTTS:-10 40 80}"
RATE="${BENCH_RATE:-100Mbit}"
KIND="${BENCH_GUEST:-debian}"
BOOT_TIMEOUT="${BOOT_TIMEOUT:-300}"
die() {
  echo "bench-boot.sh: $*" >&2
  exit 1
}
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive whole number"
[[ "$BOOT_TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "BOOT_TIMEOUT must be whole seconds"
[ "${#RTTS[@]}" -ge 3 ] || die "BENCH_RTTS needs at least three stores (k=4 m=2 over 3+ stores)"
for v in $VARIANTS; do
  case "$v" in a | b | c | c2 | d | e | rclone | nbdkit | httpdirfs) ;; *) die "unknown variant '$v'" ;; esac
done
[ "$(id -u)" = 0 ] || die "must run as root (FUSE mounts, dropping the page cache)"

# ---- what it needs ----
scripts/install-qemu.sh
missing=()
for p in rclone nbdkit httpdirfs fuse3 curl bc python3-libnbd; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
    --no-install-recommends "${missing[@]}" >/dev/null
fi
guest="$(scripts/guest.sh "$KIND")" || die "cannot build the $KIND guest"
eval "$guest"

source scripts/lib.sh
OUT="${BENCH_BOOT_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/vmifs-bench-boot.XXXXXX")}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
MOUNTS=()
SIDE_PIDS=() # mount helpers and nbdkit, stopped after each run
MOUNT_PID=

bench_cleanup() {
  local m p
  for p in "${SIDE_PIDS[@]}" $MOUNT_PID; do kill "$p" 2>/dev/null || true; done
  for m in "${MOUNTS[@]}"; do
    if grep -q " $m " /proc/mounts 2>/dev/null; then umount -l "$m" 2>/dev/null || true; fi
  done
  cleanup
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# ---- stores behind WAN links ----
NAMES=() SPORTS=() PPORTS=() CPORTS=()
ready_line() { # ready_line FILE PATTERN PID: wait for a line matching PATTERN in FILE
  local i
  for i in $(seq 100); do
    grep -m1 "$2" "$1" 2>/dev/null && return
    kill -0 "$3" 2>/dev/null || break
    sleep 0.1
  done
  cat "$1" >&2
  die "$1: not ready"
}
for i in "${!RTTS[@]}"; do
  name="rtt${RTTS[$i]}ms-$i"
  mkdir -p "$WORK/store-$i"
  "$VMIFS" serve --no-fsync --root "$WORK/store-$i" --listen 127.0.0.1:0 \
    --access-log "$WORK/access-$i.log" 2>"$WORK/serve-$i.log" &
  PIDS+=($!)
  sport=$(ready_line "$WORK/serve-$i.log" "listening on" $! | sed 's/.*127\.0\.0\.1://')
  python3 scripts/wan-proxy.py --listen 127.0.0.1:0 --target "127.0.0.1:$sport" \
    --rtt "${RTTS[$i]}ms" --rate "$RATE" --control 0 --ready >"$WORK/proxy-$i.out" 2>"$WORK/proxy-$i.log" &
  PIDS+=($!)
  read -r _ pport cport < <(ready_line "$WORK/proxy-$i.out" "^ready" $!)
  NAMES+=("$name") SPORTS+=("$sport") PPORTS+=("$pport") CPORTS+=("$cport")
done
NEAR="http://127.0.0.1:${PPORTS[0]}"
PLAIN_URL="$NEAR/plain/guest.raw"

config() { # config DIRECT|WAN [mount settings...]
  local i port
  printf '[erasure]\ndata = 4\nparity = 2\nchunk_size = "256KiB"\n'
  for i in "${!NAMES[@]}"; do
    if [ "$1" = DIRECT ]; then port=${SPORTS[$i]}; else port=${PPORTS[$i]}; fi
    printf '\n[[store]]\nname = "%s"\nurl = "http://127.0.0.1:%s"\n' "${NAMES[$i]}" "$port"
  done
  printf '\n[cache]\ndir = "%s"\nmax_size = "4GiB"\n' "$WORK/cache"
  shift
  printf '\n[mount]\n'
  printf '%s\n' "$@" ${BENCH_MOUNT_EXTRA:+"$BENCH_MOUNT_EXTRA"}
}
HAS_PROFILES=false
if "$VMIFS" profile --help >/dev/null 2>&1; then HAS_PROFILES=true; fi
config DIRECT >"$WORK/push.toml"
if $HAS_PROFILES; then
  config WAN 'boot_profiles = false' >"$WORK/mount-noprofile.toml"
  config WAN 'boot_profiles = true' >"$WORK/mount-profile.toml"
else
  config WAN >"$WORK/mount-noprofile.toml"
fi

# ---- publish ----
echo "== pushing the $KIND guest ($(du -h --apparent-size "$GUEST_ROOT" | cut -f1), $(du -h "$GUEST_ROOT" | cut -f1) allocated)" >&2
IMAGE_ID=$("$VMIFS" --config "$WORK/push.toml" push "$GUEST_ROOT" --name guest --tag bench)
SIZE=$(stat -c %s "$GUEST_ROOT")
# k=4 m=2 over three stores: every store holds exactly two shards of every chunk.
python3 - "$WORK" "${#NAMES[@]}" "$IMAGE_ID" <<'PY' || die "shard placement is not two per store per chunk"
import json, os, sys, collections
work, n, image = sys.argv[1], int(sys.argv[2]), sys.argv[3]
m = json.load(open(f"{work}/store-0/manifests/{image}.json"))
chunks = {c for c in m["chunks"] if c}
for i in range(n):
    per = collections.Counter()
    for d, _, files in os.walk(f"{work}/store-{i}/shards"):
        for f in files:
            per[f.split(".")[0]] += 1
    bad = {c: per[c] for c in chunks if per[c] != 2}
    if bad or set(per) - chunks:
        print(f"store {i}: {len(bad)} chunks without exactly 2 shards", file=sys.stderr)
        sys.exit(1)
print(f"== placement: {len(chunks)} non-zero chunks of {len(m['chunks'])}, 2 shards of each on each of {n} stores", file=sys.stderr)
PY
cp --sparse=always "$GUEST_ROOT" "$WORK/local.raw"
for i in "${!NAMES[@]}"; do
  mkdir -p "$WORK/store-$i/plain"
  cp --sparse=always "$GUEST_ROOT" "$WORK/store-$i/plain/guest.raw"
  # Served as a plain HTTP file, through the link: size and a range check.
  len=$(curl -sfI "http://127.0.0.1:${PPORTS[$i]}/plain/guest.raw" | tr -d '\r' | awk 'tolower($1)=="content-length:"{print $2}')
  [ "$len" = "$SIZE" ] || die "store $i does not serve plain/guest.raw ($len bytes, want $SIZE)"
  cmp <(curl -sf -r 1048576-2097151 "http://127.0.0.1:${PPORTS[$i]}/plain/guest.raw") \
    <(dd if="$GUEST_ROOT" bs=1M skip=1 count=1 status=none) || die "store $i serves wrong bytes"
done
echo "== every store serves plain/guest.raw ($SIZE bytes) over HTTP" >&2

# ---- helpers ----
down_now() { # bytes delivered towards this host by all links so far
  local p
  for p in "${CPORTS[@]}"; do
    (exec 3<>"/dev/tcp/127.0.0.1/$p" && cat <&3)
  done | python3 -c 'import sys, json; print(sum(json.loads(l)["down"] for l in sys.stdin if l.strip()))'
}
cat >"$WORK/record.py" <<'PY'
import json, sys
v, r, pre, setup, results = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
line = sys.stdin.read().strip()
res = json.loads(line) if line else {"seconds": None, "error": "no result"}
res.update(variant=v, round=r, setup_seconds=setup)
def total(key):
    return sum(s.get("down", 0) for s in res.get(key, []))
if res.get("seconds") is not None:
    res["total_seconds"] = round(setup + res["seconds"], 3)
    res["pulled_marker"] = total("proxies_marker") - pre
if res.get("proxies_end"):
    res["pulled_end"] = total("proxies_end") - pre
with open(results, "a") as f:
    f.write(json.dumps(res) + "\n")
if res.get("seconds") is None:
    print(f"   {v:<10} round {r}: {res.get('error')}", file=sys.stderr)
else:
    print(f"   {v:<10} round {r}: {res['total_seconds']:7.2f} s to marker (set-up {setup:.2f} s), "
          f"{res['pulled_marker'] / 2**20:7.1f} MiB pulled before it, "
          f"{res.get('pulled_end', 0) / 2**20:7.1f} MiB in all", file=sys.stderr)
PY
record() { python3 "$WORK/record.py" "$1" "$2" "$3" "$4" "$RESULTS"; } # VARIANT ROUND PRE_BYTES SETUP_S <JSON
boot() { # boot VARIANT ROUND BACKING: prints boot-once.py JSON
  local ov="$WORK/vm.qcow2"
  rm -f "$ov"
  qemu-img create -q -f qcow2 -F raw -b "$3" -u "$ov" "$SIZE"
  drop_caches
  local ctl=() p
  for p in "${CPORTS[@]}"; do ctl+=(--proxy-control "$p"); done
  python3 scripts/boot-once.py --overlay "$ov" --kernel "$GUEST_KERNEL" --initrd "$GUEST_INITRD" \
    --append "$GUEST_APPEND" --timeout "$BOOT_TIMEOUT" "${ctl[@]}" \
    --trace "$OUT/trace-$1-$2.log" --console "$OUT/console-$1-$2.log" || true
}
wait_file() { # wait_file PATH SECONDS PID
  local i
  for i in $(seq $(($2 * 10))); do
    [ -e "$1" ] && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
vmifs_mount() { # vmifs_mount CONFIG LOG
  mkdir -p "$MNT"
  VMIFS_LOG="${VMIFS_BENCH_LOG:-info}" "$VMIFS" --config "$1" mount "$MNT" 2>"$2" &
  MOUNT_PID=$!
  MOUNTS+=("$MNT")
  wait_file "$MNT/guest/bench.raw" 60 "$MOUNT_PID" || { tail -5 "$2" >&2; die "vmifs mount did not come up"; }
}
status_json() { "$VMIFS" --config "$1" status --json >"$2" 2>/dev/null || true; } # CONFIG FILE
vmifs_unmount() {
  [ -n "$MOUNT_PID" ] || return 0
  kill -TERM "$MOUNT_PID" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$MOUNT_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$MOUNT_PID" 2>/dev/null || true
  wait "$MOUNT_PID" 2>/dev/null || true
  MOUNT_PID=
  if grep -q " $MNT " /proc/mounts; then umount -l "$MNT" || true; fi
}
side_stop() { # stop mount helpers / nbdkit started for one run; unmount DIR if given
  local p
  if [ -n "${1:-}" ] && grep -q " $1 " /proc/mounts; then umount "$1" 2>/dev/null || umount -l "$1" || true; fi
  for p in "${SIDE_PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  SIDE_PIDS=()
}
rclone_up() { # rclone_up DIR: mount the nearest store's plain/ at DIR, empty cache
  rm -rf "$WORK/rclone-cache"
  mkdir -p "$1"
  rclone mount --http-url "$NEAR/plain/" :http: "$1" --read-only --vfs-cache-mode full \
    --cache-dir "$WORK/rclone-cache" --dir-cache-time 1000h --log-file "$OUT/rclone.log" &
  SIDE_PIDS+=($!)
  MOUNTS+=("$1")
  wait_file "$1/guest.raw" 60 "$!" || die "rclone mount did not come up: $(tail -3 "$OUT/rclone.log")"
}
httpdirfs_up() {
  rm -rf "$WORK/httpdirfs-cache"
  mkdir -p "$1" "$WORK/httpdirfs-cache"
  httpdirfs -f --single-file-mode --cache --cache-location "$WORK/httpdirfs-cache" \
    "$PLAIN_URL" "$1" >>"$OUT/httpdirfs.log" 2>&1 &
  SIDE_PIDS+=($!)
  MOUNTS+=("$1")
  wait_file "$1/guest.raw" 60 "$!" || die "httpdirfs did not come up"
}
nbdkit_up() { # nbdkit_up SOCKET
  rm -f "$1"
  nbdkit -f -r -U "$1" curl url="$PLAIN_URL" 2>>"$OUT/nbdkit.log" &
  SIDE_PIDS+=($!)
  wait_file "$1" 30 "$!" || die "nbdkit did not come up"
}

# ---- correctness of every lazy path (cold) ----
# Ranges: what the guest reads while booting (from a local boot's trace) plus
# random ones of any length and alignment; read by 4 threads at once, as QEMU does.
echo "== checking the bytes each lazy path returns (cold cache, through the nearest link)" >&2
boot e 0 "$WORK/local.raw" >"$OUT/reference-boot.json"
python3 - "$OUT/trace-e-0.log" "$SIZE" >"$WORK/ranges.txt" <<'PY'
import random, sys
trace, size = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
ranges = []
for line in open(trace):
    if ":blk_co_preadv " in line:
        f = line.split()
        ranges.append((int(f[f.index("offset") + 1]), int(f[f.index("bytes") + 1])))
ranges = rng.sample(ranges, min(len(ranges), 200))
for _ in range(64):
    n = rng.choice([1, 511, 4096, 65537, 262144 + 3, 1 << 20, 3 << 20])
    ranges.append((rng.randrange(0, size - n), n))
ranges.append((size - 5000, 5000))
for off, n in ranges:
    print(off, n)
PY
check_file() { # check_file NAME PATH: compare ranges read through PATH with the image
  python3 - "$1" "$2" "$GUEST_ROOT" "$WORK/ranges.txt" <<'PY'
import os, sys
from concurrent.futures import ThreadPoolExecutor
name, path, ref, ranges = sys.argv[1:5]
ranges = [tuple(map(int, l.split())) for l in open(ranges)]
fd, rfd = os.open(path, os.O_RDONLY), os.open(ref, os.O_RDONLY)
def one(r):
    off, n = r
    got = b""
    while len(got) < n:  # a short read is allowed; end of file is not
        more = os.pread(fd, n - len(got), off + len(got))
        if not more:
            break
        got += more
    want = os.pread(rfd, n, off)
    return (off, n, sum(a != b for a, b in zip(got, want)) + abs(len(got) - len(want)))
with ThreadPoolExecutor(4) as ex:
    res = list(ex.map(one, ranges))
bad = [r for r in res if r[2]]
total = sum(n for _, n, _ in res)
print(f"{name}\t{len(res)} ranges, {total/2**20:.1f} MiB\t" +
      (f"WRONG DATA: {len(bad)} ranges, {sum(b for *_, b in bad)} bytes differ, e.g. offset {bad[0][0]} length {bad[0][1]}" if bad else "all bytes match"))
PY
}
check_nbd() { # check_nbd NAME SOCKET (python3-libnbd belongs to the system python)
  /usr/bin/python3 - "$1" "$2" "$GUEST_ROOT" "$WORK/ranges.txt" <<'PY'
import os, sys, nbd
name, sock, ref, ranges = sys.argv[1:5]
ranges = [tuple(map(int, l.split())) for l in open(ranges)]
h = nbd.NBD()
h.connect_unix(sock)
rfd = os.open(ref, os.O_RDONLY)
bad = []
for off, n in ranges:
    got = h.pread(n, off)
    want = os.pread(rfd, n, off)
    d = sum(a != b for a, b in zip(got, want)) + abs(len(got) - len(want))
    if d:
        bad.append((off, n, d))
total = sum(n for _, n in ranges)
print(f"{name}\t{len(ranges)} ranges, {total/2**20:.1f} MiB\t" +
      (f"WRONG DATA: {len(bad)} ranges, {sum(b for *_, b in bad)} bytes differ, e.g. offset {bad[0][0]} length {bad[0][1]}" if bad else "all bytes match"))
PY
}
check_qemu_http() { # a sample of ranges through QEMU's http driver (qemu-img per range)
  python3 - "$PLAIN_URL" "$GUEST_ROOT" "$WORK/ranges.txt" "$WORK" <<'PY'
import os, subprocess, sys
url, ref, ranges, work = sys.argv[1:5]
ranges = [tuple(map(int, l.split())) for l in open(ranges)]
# The raw driver's offset/size want 512-byte alignment: widen each range.
ranges = [((o // 512) * 512, -(-(o + n) // 512) * 512 - (o // 512) * 512) for o, n in ranges][::8]
rfd = os.open(ref, os.O_RDONLY)
bad = []
for off, n in ranges:
    out = os.path.join(work, "range.bin")
    opts = f"driver=raw,offset={off},size={n},file.driver=http,file.url={url}"
    subprocess.run(["qemu-img", "convert", "-O", "raw", "--image-opts", opts, out], check=True)
    got = open(out, "rb").read()
    want = os.pread(rfd, n, off)
    if got != want:
        bad.append((off, n))
print(f"b (QEMU http)\t{len(ranges)} ranges, {sum(n for _, n in ranges)/2**20:.1f} MiB\t" +
      (f"WRONG DATA: {len(bad)} ranges, e.g. offset {bad[0][0]}" if bad else "all bytes match"))
PY
}
: >"$OUT/checks.txt"
for v in $VARIANTS; do
  case "$v" in
  b) check_qemu_http >>"$OUT/checks.txt" ;;
  c)
    rm -rf "$WORK/cache"
    vmifs_mount "$WORK/mount-noprofile.toml" "$WORK/mount-check.log"
    drop_caches
    check_file "c (vmifs)" "$MNT/guest/bench.raw" >>"$OUT/checks.txt"
    vmifs_unmount
    ;;
  rclone)
    rclone_up "$WORK/rclone-mnt"
    drop_caches
    check_file rclone "$WORK/rclone-mnt/guest.raw" >>"$OUT/checks.txt"
    side_stop "$WORK/rclone-mnt"
    ;;
  httpdirfs)
    httpdirfs_up "$WORK/httpdirfs-mnt"
    drop_caches
    check_file httpdirfs "$WORK/httpdirfs-mnt/guest.raw" >>"$OUT/checks.txt"
    side_stop "$WORK/httpdirfs-mnt"
    ;;
  nbdkit)
    nbdkit_up "$WORK/nbd.sock"
    check_nbd nbdkit "$WORK/nbd.sock" >>"$OUT/checks.txt"
    side_stop
    ;;
  esac
done
column -t -s $'\t' "$OUT/checks.txt" >&2 || cat "$OUT/checks.txt" >&2

# ---- timed boots ----
PROFILE_RECORDED=false
record_profile() { # one boot with profiles on, then publish what it read
  rm -rf "$WORK/cache"
  vmifs_mount "$WORK/mount-profile.toml" "$OUT/mount-record.log"
  boot c2-record 0 "$MNT/guest/bench.raw" >"$OUT/profile-record-boot.json"
  # The window ends at this boot's marker.
  local window
  window=$(python3 -c 'import json, sys, math; print(math.ceil(json.load(open(sys.argv[1]))["seconds"]) + 1)' \
    "$OUT/profile-record-boot.json") || die "the boot that records the profile failed"
  "$VMIFS" --config "$WORK/mount-profile.toml" profile record guest:bench --window "${window}s" \
    >"$OUT/profile-record.txt" 2>&1 ||
    die "vmifs profile record failed: $(tail -1 "$OUT/profile-record.txt")"
  vmifs_unmount
  PROFILE_RECORDED=true
}
echo "== $RUNS rounds of: $VARIANTS (stores: ${RTTS[*]} ms RTT, $RATE each; load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
for round in $(seq "$RUNS"); do
  echo "== round $round (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  for v in $VARIANTS; do
    case "$v" in
    e)
      pre=$(down_now)
      boot e "$round" "$WORK/local.raw" | record e "$round" "$pre" 0
      ;;
    a)
      rm -f "$WORK/download.raw"
      drop_caches
      pre=$(down_now)
      t0=$(now)
      curl -sf --max-time "$BOOT_TIMEOUT" -o "$WORK/download.raw" "$PLAIN_URL" || die "curl download failed"
      setup=$(echo "$(now) - $t0" | bc -l)
      boot a "$round" "$WORK/download.raw" | record a "$round" "$pre" "$setup"
      rm -f "$WORK/download.raw"
      ;;
    b)
      pre=$(down_now)
      boot b "$round" "json:{\"file.driver\":\"http\",\"file.url\":\"$PLAIN_URL\"}" | record b "$round" "$pre" 0
      ;;
    c)
      rm -rf "$WORK/cache"
      pre=$(down_now)
      t0=$(now)
      vmifs_mount "$WORK/mount-noprofile.toml" "$OUT/mount-c-$round.log"
      setup=$(echo "$(now) - $t0" | bc -l)
      boot c "$round" "$MNT/guest/bench.raw" | record c "$round" "$pre" "$setup"
      status_json "$WORK/mount-noprofile.toml" "$OUT/status-c-$round.json"
      if [[ " $VARIANTS " == *" d "* ]]; then
        pre=$(down_now)
        boot d "$round" "$MNT/guest/bench.raw" | record d "$round" "$pre" 0
        status_json "$WORK/mount-noprofile.toml" "$OUT/status-d-$round.json"
      fi
      vmifs_unmount
      ;;
    d)
      if [[ " $VARIANTS " != *" c "* ]]; then # d on its own: fill the cache first
        rm -rf "$WORK/cache"
        vmifs_mount "$WORK/mount-noprofile.toml" "$OUT/mount-d-$round.log"
        boot d-fill "$round" "$MNT/guest/bench.raw" >/dev/null
        pre=$(down_now)
        boot d "$round" "$MNT/guest/bench.raw" | record d "$round" "$pre" 0
        vmifs_unmount
      fi
      ;;
    c2)
      if ! $HAS_PROFILES; then
        echo '{"seconds": null, "error": "n/a: this vmifs has no boot profiles"}' | record c2 "$round" 0 0
        continue
      fi
      $PROFILE_RECORDED || record_profile
      rm -rf "$WORK/cache"
      pre=$(down_now)
      t0=$(now)
      vmifs_mount "$WORK/mount-profile.toml" "$OUT/mount-c2-$round.log"
      setup=$(echo "$(now) - $t0" | bc -l)
      boot c2 "$round" "$MNT/guest/bench.raw" | record c2 "$round" "$pre" "$setup"
      status_json "$WORK/mount-profile.toml" "$OUT/status-c2-$round.json"
      vmifs_unmount
      ;;
    rclone)
      pre=$(down_now)
      t0=$(now)
      rclone_up "$WORK/rclone-mnt"
      setup=$(echo "$(now) - $t0" | bc -l)
      boot rclone "$round" "$WORK/rclone-mnt/guest.raw" | record rclone "$round" "$pre" "$setup"
      side_stop "$WORK/rclone-mnt"
      ;;
    httpdirfs)
      pre=$(down_now)
      t0=$(now)
      httpdirfs_up "$WORK/httpdirfs-mnt"
      setup=$(echo "$(now) - $t0" | bc -l)
      boot httpdirfs "$round" "$WORK/httpdirfs-mnt/guest.raw" | record httpdirfs "$round" "$pre" "$setup"
      side_stop "$WORK/httpdirfs-mnt"
      ;;
    nbdkit)
      pre=$(down_now)
      t0=$(now)
      nbdkit_up "$WORK/nbd.sock"
      setup=$(echo "$(now) - $t0" | bc -l)
      boot nbdkit "$round" "nbd+unix:///?socket=$WORK/nbd.sock" | record nbdkit "$round" "$pre" "$setup"
      side_stop
      ;;
    esac
  done
done

# ---- report ----
cp "$WORK"/access-*.log "$OUT/" 2>/dev/null || true
cp "$WORK/store-0/manifests/$IMAGE_ID.json" "$OUT/manifest.json"
python3 scripts/bench-boot-report.py "$OUT" \
  --rtts "${RTTS[*]}" --rate "$RATE" --guest "$KIND" --md "${BENCH_BOOT_MD:-}"
echo "== per-run data, traces and logs: $OUT" >&2
