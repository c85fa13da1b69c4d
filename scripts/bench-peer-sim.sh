#!/usr/bin/env bash
# The peer-exchange simulation (examples/peer_sim.rs): unicast, binary tree and
# vmifs's peer exchange for 10, 100 and 1,000 hosts reading one 1 GiB image at
# once, 5% of them freezing mid-run. Writes the CSV and an SVG plot.
#   scripts/bench-peer-sim.sh [OUTDIR] [extra peer_sim flags...]
# Deterministic (seeded): the same flags give the same numbers on any machine.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-benches/results}"
shift || true
mkdir -p "$OUT"
cargo run --quiet --release --example peer_sim -- --out "$OUT/peer-sim.csv" "$@"
python3 scripts/peer-sim-plot.py "$OUT/peer-sim.csv" "$OUT/peer-sim.svg"
echo "wrote $OUT/peer-sim.csv and $OUT/peer-sim.svg"
