#!/usr/bin/env bash
# Embedding init, xavier (the paper's, over the concatenated table) against normal (N(0, 1e-4), FuxiCTR's and
# DeepCTR's): SEEDS seeds each, to convergence, on a small-vocabulary dataset (tts-data synth --max-vocab 12:
# 777 ids) and on the Criteo-like data of converged_claims.sh (whose first SEEDS members are the xavier arm
# there); then benchmarks/init_compare.py prints the table. Same small DCNv2 and options as converged_claims.sh.
#   SEEDS=4 benchmarks/init_compare.sh [CLAIMS=out/claims] [OUT=out/inits] [ROWS=50000]
set -euo pipefail
CLAIMS=${1:-out/claims}
OUT=${2:-out/inits}
ROWS=${3:-50000}
SEEDS=${SEEDS:-4}
HP=(--hparam 'mlp_dims=[256,128]' --hparam num_cross_layers=2)
mkdir -p "$OUT/runs" "$OUT/reports"
stamp() { echo "[$(date +%T)] $*"; }
[ -f "$OUT/small.tsv" ] || tts-data synth --rows "$ROWS" --seed 0 --max-vocab 12 --out "$OUT/small.tsv"
[ -d "$OUT/small" ] || tts-data prepare --preset criteo --input "$OUT/small.tsv" --out "$OUT/small"
train() {  # RUN DATA INIT
  tts-train --data "$2" --members "dcnv2*$SEEDS" --out "$OUT/runs/$1" --jobs 2 --threads 1 -q "${HP[@]}" \
    --embedding-init "$3" --resume
  stamp "$1 trained"
}
evaluate() {  # NAME DATA SOURCES...
  local name=$1 data=$2; shift 2
  [ -f "$OUT/reports/$name/results.json" ] || tts-eval "$@" --data "$data" --out "$OUT/reports/$name" \
    --merges mean --no-soup --threads 1 -q --force
}
first() { ls "$1"/member_*.pt | head -n "$SEEDS"; }
train small_xavier "$OUT/small" xavier
evaluate small_xavier "$OUT/small" $(first "$OUT/runs/small_xavier")
train small_normal "$OUT/small" normal
evaluate small_normal "$OUT/small" $(first "$OUT/runs/small_normal")
train criteo_normal "$CLAIMS/data" normal
evaluate criteo_normal "$CLAIMS/data" $(first "$OUT/runs/criteo_normal")
evaluate criteo_xavier "$CLAIMS/data" $(first "$CLAIMS/runs/dcnv2x16")
.venv/bin/python benchmarks/init_compare.py "$OUT" --claims "$CLAIMS" --seeds "$SEEDS"
stamp "done"
