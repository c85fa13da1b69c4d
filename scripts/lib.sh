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

# start_stores N [serve options...]: N stores on free loopback ports (PORTS);
# with ACCESS_LOGS=1 each writes $WORK/access-<i>.log.
start_stores() {
  local n=$1 i port
  shift
  for ((i = 0; i < n; i++)); do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$VMIFS" serve "$@" ${ACCESS_LOGS:+--access-log "$WORK/access-$i.log"} --root "$WORK/store-$i" \
      --listen "127.0.0.1:$port" 2>"$WORK/serve-$i.log" &
    PIDS+=($!)
    PORTS+=("$port")
  done
  for port in "${PORTS[@]}"; do
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.1; done
  done
}

# store_gets I: shard and pack GETs in store I's access log so far (needs
# ACCESS_LOGS=1; plain files read by curl are not counted).
store_gets() { grep -cE ' GET /(shards|packs)/' "$WORK/access-$1.log" || true; }

# credentials: a write token ($WORK/token, and $WORK/tokens for serve), and a
# private CA with a certificate for 127.0.0.1 ($WORK/pki/{ca,server}.pem,
# server.key). Then `start_stores N $(serve_credentials)` and
# `STORE_TLS=1 store_config ...` use them.
credentials() {
  mkdir -p "$WORK/pki"
  openssl rand -hex 32 >"$WORK/token"
  printf 'write %s\n' "$(cat "$WORK/token")" >"$WORK/tokens"
  chmod 600 "$WORK/token" "$WORK/tokens"
  (
    cd "$WORK/pki"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
      -out ca.pem -days 2 -subj "/CN=vmifs demo CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key \
      -out server.csr -subj "/CN=127.0.0.1" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\n' >san.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
      -out server.pem -days 2 -extfile san.ext 2>/dev/null
  )
}
serve_credentials() {
  echo --tokens "$WORK/tokens" --tls-cert "$WORK/pki/server.pem" --tls-key "$WORK/pki/server.key"
}

# store_config NAME...: [[store]] tables for the started stores, in order
# (https with the token and CA of `credentials` when STORE_TLS=1).
store_config() {
  local i=0 name
  for name in "$@"; do
    if [ "${STORE_TLS:-}" = 1 ]; then
      printf '\n[[store]]\nname = "%s"\nurl = "https://127.0.0.1:%s"\ntoken_file = "%s"\nca_file = "%s"\n' \
        "$name" "${PORTS[$i]}" "$WORK/token" "$WORK/pki/ca.pem"
    else
      printf '\n[[store]]\nname = "%s"\nurl = "http://127.0.0.1:%s"\n' "$name" "${PORTS[$i]}"
    fi
    i=$((i + 1))
  done
}

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
