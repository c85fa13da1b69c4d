#!/usr/bin/env bash
# The test command: installs what the tests need when it is missing, then runs
# formatting, lints, every test (release build), a short fuzz run of the
# parsers, and the benchmarks once in test mode. Safe to run again; slow installs
# are cached on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=never
# Build artefacts live outside the checkout so a fresh clone reuses them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vmifs/target}"
export PATH="$HOME/.cargo/bin:$PATH"

# QEMU (with qemu-utils) and the tools that build the boot test's guest.
scripts/install-qemu.sh
need_apt=()
command -v fusermount3 >/dev/null || need_apt+=(fuse3)
command -v curl >/dev/null || need_apt+=(curl)
command -v tcpdump >/dev/null || need_apt+=(tcpdump) # the capture of scripts/peer-bed.py (tests/it/peers.rs)
command -v c++ >/dev/null || need_apt+=(g++) # libFuzzer, for scripts/fuzz.sh
if ((${#need_apt[@]})); then
  echo "== installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# promtool checks the /metrics scrapes of tests/it/metrics.rs. Debian ships it only
# in the prometheus package, whose server we do not want running.
if ! command -v promtool >/dev/null; then
  echo "== installing prometheus (for promtool)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if command -v systemctl >/dev/null; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
fi
scripts/s3-server.sh
scripts/cloud-emulators.sh
# Garage, the S3 server the store conformance suite also runs against below: a
# build of about 11 minutes on 2 cores the first time (VMIFS_SKIP_GARAGE=1 skips
# installing it; the suite then runs against s3s-fs only).
if [ "${VMIFS_SKIP_GARAGE:-}" != 1 ] && ! command -v garage >/dev/null && [ ! -x "$HOME/.cargo/bin/garage" ]; then
  echo "== installing garage (cargo install, once)"
  env -u CARGO_TARGET_DIR cargo install --locked --quiet garage@2.5.0
fi
# The small guest tests/it/boot.rs and tests/it/views.rs boot from the mount (cached in ~/.cache/vmifs/guest).
if [ "${VMIFS_SKIP_BOOT:-}" != 1 ]; then scripts/guest.sh small >/dev/null; fi

echo "== cargo fmt --check"
cargo fmt --check
cargo fmt --check --manifest-path fuzz/Cargo.toml
echo "== cargo clippy"
cargo clippy --release --all-targets --quiet -- -D warnings
echo "== cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --release --quiet
echo "== tests"
# Stale FUSE mounts of a killed earlier run would fail the mount tests.
grep -o ' [^ ]*vmifs[^ ]* fuse' /proc/mounts 2>/dev/null | awk '{print $1}' | xargs -r -n1 umount -l 2>/dev/null || true
cargo test --release --no-fail-fast 2>&1 | tee "${TMPDIR:-/tmp}/vmifs-test.log"
if command -v garage >/dev/null || [ -x "$HOME/.cargo/bin/garage" ]; then
  # Garage is the S3 store we recommend; when it is installed, the store
  # conformance suite runs against a real single-node Garage too.
  echo "== store conformance against Garage"
  gdir="$(mktemp -d "${TMPDIR:-/tmp}/vmifs-garage.XXXXXX")"
  trap 'scripts/garage.sh stop "$gdir" >/dev/null 2>&1 || true; rm -rf "$gdir"' EXIT
  eval "$(scripts/garage.sh "$gdir")"
  cargo test --release --test it store_conformance::s3_store_against_garage 2>&1 | tee -a "${TMPDIR:-/tmp}/vmifs-test.log"
  scripts/garage.sh stop "$gdir" >/dev/null 2>&1 || true
fi
if command -v systemd-analyze >/dev/null; then
  echo "== systemd-analyze verify"
  units="$(mktemp -d)"
  for f in systemd/*.service; do
    sed "s|/usr/local/bin/vmifs|$CARGO_TARGET_DIR/release/vmifs|g" "$f" >"$units/$(basename "$f")"
  done
  mv "$units/vmifs-serve@.service" "$units/vmifs-serve@eu-west.service"
  systemd-analyze verify "$units"/*.service
  rm -rf "$units"
fi
# A short fuzz run of every parser (long runs: RELIABILITY.md); fails on any crash.
scripts/fuzz.sh "${VMIFS_FUZZ_SECONDS:-5}"
echo "== benchmarks (test mode)"
cargo bench --bench codec --bench store --quiet -- --test
summary=$(grep -E '^test result:' "${TMPDIR:-/tmp}/vmifs-test.log" | awk '{p+=$4; f+=$6; i+=$8} END {print p" passed, "f" failed, "i" ignored"}')
echo "$summary"
