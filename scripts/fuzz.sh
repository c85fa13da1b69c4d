#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS]: build every fuzz target in fuzz/ and run each for
# SECONDS (default 20), starting from the seed inputs in fuzz/corpus/<target>/.
# Fails on the first crash; the crashing input is kept under fuzz/artifacts/.
#
# Works on a stable toolchain: installs cargo-fuzz when missing, builds without
# a sanitizer (safe Rust needs none to report panics and overflows; debug
# assertions stay on) and lets stable rustc accept cargo-fuzz's flags.
# Long runs (RELIABILITY.md) use the same command with -runs=N.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-20}"
case "$secs" in
  '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS]" >&2; exit 2 ;;
esac

export CARGO_TERM_COLOR=never
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vmifs/target}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi

# Kept next to the main build so a later run reuses it.
build=(--sanitizer none --debug-assertions --codegen-units 16
  --target-dir "$CARGO_TARGET_DIR/fuzz")
echo "== building fuzz targets"
cargo fuzz build "${build[@]}"

scratch="$(mktemp -d "${TMPDIR:-/tmp}/vmifs-fuzz.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
for t in $(cargo fuzz list); do
  echo "== fuzz $t for ${secs}s"
  mkdir -p "$scratch/$t"
  # New inputs go to the scratch corpus (first directory); the seeds are only read.
  dict=()
  [ -f "fuzz/dict/$t.dict" ] && dict=(-dict="fuzz/dict/$t.dict")
  if ! cargo fuzz run "${build[@]}" "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 "${dict[@]}" >"$scratch/$t.log" 2>&1; then
    tail -n 40 "$scratch/$t.log"
    echo "fuzz: target $t failed (crashing input under fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  grep -E '^Done [0-9]+ runs' "$scratch/$t.log" || true
  grep -E '^#[0-9]+' "$scratch/$t.log" | tail -n 1 | grep -oE 'cov: [0-9]+ ft: [0-9]+' || true
done
echo "== fuzz: no crash"
