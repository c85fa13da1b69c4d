# Shared by the demo and benchmark scripts (sourced, not run): a release build,
# a temporary work directory, loopback `vmifs serve` stores, and a cleanup that
# always runs: unmount, stop every process started, remove the directory.

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vmifs/target}"
cargo build --release --quiet
VMIFS="$CARGO_TARGET_DIR/release/vmifs"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/vmifs.XXXXXX")"
MNT="$WORK/mnt"
PIDS=()
PORTS=()

cleanup() {
  if grep -q " $MNT " /proc/mounts 2>/dev/null; then umount -l "$MNT" 2>/dev/null || true; fi
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# start_stores N [serve options...]: N stores on free loopback ports (PORTS).
start_stores() {
  local n=$1 i port
  shift
  for ((i = 0; i < n; i++)); do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$VMIFS" serve "$@" --root "$WORK/store-$i" --listen "127.0.0.1:$port" 2>"$WORK/serve-$i.log" &
    PIDS+=($!)
    PORTS+=("$port")
  done
  for port in "${PORTS[@]}"; do
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.1; done
  done
}

# store_config NAME...: [[store]] tables for the started stores, in order.
store_config() {
  local i=0 name
  for name in "$@"; do
    printf '\n[[store]]\nname = "%s"\nurl = "http://127.0.0.1:%s"\n' "$name" "${PORTS[$i]}"
    i=$((i + 1))
  done
}

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
