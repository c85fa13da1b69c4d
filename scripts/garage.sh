#!/usr/bin/env bash
# Start a single-node Garage (2.x) S3 server on loopback for the conformance
# tests, and print the variables that point them at it:
#
#   eval "$(scripts/garage.sh /tmp/garage)"
#   cargo test --test store_conformance s3_store_against_garage
#   scripts/garage.sh stop /tmp/garage
#
# DIR (default: a new temporary directory) holds the configuration, metadata,
# data, log and pid file. Running it again on a configured DIR restarts the
# server if needed and prints the same variables. Messages go to stderr; only
# the `export` lines go to stdout.
#
# Ports: S3 API 127.0.0.1:3900, RPC 127.0.0.1:3901, admin 127.0.0.1:3903
# (override with GARAGE_S3_PORT, GARAGE_RPC_PORT, GARAGE_ADMIN_PORT).
set -euo pipefail

say() { echo "garage.sh: $*" >&2; }

if ! command -v garage >/dev/null 2>&1; then
    if [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/garage" ]; then
        PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    else
        say "the garage binary is not installed. Install it with:"
        say "    cargo install --locked garage        (a long build), or"
        say "    a release binary from https://garagehq.deuxfleurs.fr/download/"
        exit 1
    fi
fi

if [ "${1:-}" = stop ]; then
    dir="${2:?usage: garage.sh stop DIR}"
    if [ -f "$dir/garage.pid" ] && kill "$(cat "$dir/garage.pid")" 2>/dev/null; then
        say "stopped garage (pid $(cat "$dir/garage.pid"))"
    fi
    rm -f "$dir/garage.pid"
    exit 0
fi

dir="${1:-$(mktemp -d -t vmifs-garage.XXXXXX)}"
mkdir -p "$dir/meta" "$dir/data"
dir="$(cd "$dir" && pwd)"
s3_port="${GARAGE_S3_PORT:-3900}"
rpc_port="${GARAGE_RPC_PORT:-3901}"
admin_port="${GARAGE_ADMIN_PORT:-3903}"
cfg="$dir/garage.toml"
bucket=vmifs-test
key_name=vmifs-test
g() { garage -c "$cfg" "$@"; }

if [ ! -f "$cfg" ]; then
    if command -v openssl >/dev/null 2>&1; then
        secret="$(openssl rand -hex 32)"
        admin_token="$(openssl rand -hex 16)"
    else
        secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
        admin_token="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    fi
    cat >"$cfg" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1

rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3_port"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin_port"
admin_token = "$admin_token"
TOML
    chmod 600 "$cfg"
fi

if [ -f "$dir/garage.pid" ] && kill -0 "$(cat "$dir/garage.pid")" 2>/dev/null; then
    say "garage already running (pid $(cat "$dir/garage.pid"))"
else
    say "starting garage in $dir (log: $dir/garage.log)"
    nohup garage -c "$cfg" server >>"$dir/garage.log" 2>&1 &
    echo $! >"$dir/garage.pid"
fi

for _ in $(seq 1 60); do
    if g status >/dev/null 2>&1; then break; fi
    if ! kill -0 "$(cat "$dir/garage.pid")" 2>/dev/null; then
        say "garage exited; the end of its log:"
        tail -n 20 "$dir/garage.log" >&2
        exit 1
    fi
    sleep 0.5
done
g status >/dev/null 2>&1 || { say "garage did not come up; see $dir/garage.log"; exit 1; }

if [ ! -f "$dir/env" ]; then
    node="$(g node id -q 2>/dev/null | head -n1 | cut -d@ -f1)"
    [ -n "$node" ] || { say "could not read the node id"; exit 1; }
    say "assigning layout to node ${node:0:16}"
    g layout assign -z dc1 -c 1G "$node" >&2
    g layout apply --version 1 >&2

    say "creating key $key_name and bucket $bucket"
    out="$(g key create "$key_name")"
    key_id="$(printf '%s\n' "$out" | grep -i 'key id' | head -n1 | awk '{print $NF}')"
    key_secret="$(printf '%s\n' "$out" | grep -i 'secret key' | head -n1 | awk '{print $NF}')"
    if [ -z "$key_id" ] || [ -z "$key_secret" ]; then
        say "could not parse the output of 'garage key create':"
        printf '%s\n' "$out" >&2
        exit 1
    fi
    g bucket create "$bucket" >&2
    g bucket allow --read --write --owner "$bucket" --key "$key_name" >&2

    umask 077
    cat >"$dir/env" <<ENV
export VMIFS_GARAGE_ENDPOINT=http://127.0.0.1:$s3_port
export VMIFS_GARAGE_BUCKET=$bucket
export AWS_ACCESS_KEY_ID=$key_id
export AWS_SECRET_ACCESS_KEY=$key_secret
export AWS_REGION=garage
ENV
fi

say "ready; stop it with: scripts/garage.sh stop $dir"
cat "$dir/env"
