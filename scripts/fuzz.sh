#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS]: build every fuzz target in fuzz/ and run each for
# SECONDS (default 20), starting from the seed inputs in fuzz/corpus/<target>/.
# Fails on the first crash; the crashing input is kept under fuzz/artifacts/.
#
# Works on a stable toolchain: installs cargo-fuzz when missing and builds
# without a sanitizer (which needs nightly flags; safe Rust needs none to report
# panics, and overflow checks stay on), at opt-level 1 so that a first build
# stays short. The long runs in RELIABILITY.md use cargo-fuzz's defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-20}"
if [[ ! "$secs" =~ ^[0-9]+$ ]] || ((10#$secs < 1)); then
  echo "usage: scripts/fuzz.sh [SECONDS >= 1]" >&2
  exit 2
fi

export CARGO_TERM_COLOR=never
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vmifs/target}"

if ! command -v c++ >/dev/null; then
  echo "fuzz: libFuzzer needs a C++ compiler (apt-get install g++)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi

export CARGO_PROFILE_RELEASE_OPT_LEVEL=1
# The build is kept next to the main build so a later run reuses it.
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
  if ! compgen -G "fuzz/corpus/$t/seed-*" >/dev/null; then
    echo "fuzz: target $t has no seed input (add fuzz/corpus/$t/seed-*)" >&2
    exit 1
  fi
  dict=()
  [ -f "fuzz/dict/$t.dict" ] && dict=(-dict="fuzz/dict/$t.dict")
  if ! cargo fuzz run "${build[@]}" "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 "${dict[@]}" >"$scratch/$t.log" 2>&1; then
    grep -m1 -A4 'panicked at' "$scratch/$t.log" || tail -n 40 "$scratch/$t.log"
    sed -n '/^Failing input:/,/^Minimize/p' "$scratch/$t.log"
    echo "fuzz: target $t failed (crashing input under fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  grep -E '^Done [0-9]+ runs' "$scratch/$t.log" || true
  grep -E '^#[0-9]+' "$scratch/$t.log" | tail -n 1 | grep -oE 'cov: [0-9]+ ft: [0-9]+' || true
done
echo "== fuzz: no crash"
