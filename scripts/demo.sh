#!/usr/bin/env bash
# The whole pipeline on the embedded default: synthetic data in the exact Criteo TSV format.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-out/demo}
mkdir -p "$OUT"

echo "== 1. data: synthesise and prepare"
tts-data synth --rows "${DEMO_ROWS:-200000}" --seed 0 --out "$OUT/criteo_synth.tsv"
tts-data prepare --preset criteo --input "$OUT/criteo_synth.tsv" --out "$OUT/data" --force
