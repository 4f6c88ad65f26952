#!/usr/bin/env bash
# The paper's claims measured again at convergence (issue 24): 16 seeds of a small DCNv2 (MLP [256,128],
# 2 cross layers: about 1M MACs, to fit a shared 2-core machine) trained until validation AUC stops improving
# (the tts-train defaults), then: merging per M, soups and cascades on all 16; a wider MLP and K parallel
# modules at SCALING_M times one member's MACs (each its own process); with STUDENTS=1, students distilled
# from M=8 at 4x width and the same 4x model on the labels alone.
#   SCALING_M=2,4,8 STUDENTS=1 benchmarks/converged_claims.sh [OUT=out/claims] [ROWS=100000]
# Outputs (never in git): OUT/data, OUT/runs/*, OUT/reports/{merge,width,modules,distill}/ (report.md,
# results.json, frontier.png). Finished steps are skipped, so a rerun continues.
set -euo pipefail
OUT=${1:-out/claims}
ROWS=${2:-100000}
SCALING_M=${SCALING_M:-2,4,8}
HP=(--hparam 'mlp_dims=[256,128]' --hparam num_cross_layers=2)
RUN=$OUT/runs/dcnv2x16
mkdir -p "$OUT/runs" "$OUT/reports"
stamp() { echo "[$(date +%T)] $*"; }
[ -f "$OUT/synth.tsv" ] || tts-data synth --rows "$ROWS" --seed 0 --out "$OUT/synth.tsv"
[ -d "$OUT/data" ] || tts-data prepare --preset criteo --input "$OUT/synth.tsv" --out "$OUT/data"
evaluate() {  # NAME ARGS...: one report, skipped when done
  local name=$1; shift
  [ -f "$OUT/reports/$name/results.json" ] || tts-eval "$@" --data "$OUT/data" --out "$OUT/reports/$name" \
    --threads 1 -q --force
  stamp "$name done"
}
stamp "16 members"
tts-train --data "$OUT/data" --members 'dcnv2*16' --out "$RUN" --jobs 2 --threads 1 -q "${HP[@]}" --resume
# Three processes: each parameter-scaled kind trains its models one after the other.
M_LIST=1,2,4,8
evaluate width "$RUN" --m-list "$M_LIST" --merges mean --no-soup --param-scaling --scaling-m "$SCALING_M" \
  --scaling-kinds width &
evaluate modules "$RUN" --m-list "$M_LIST" --merges mean --no-soup --param-scaling --scaling-m "$SCALING_M" \
  --scaling-kinds module_width &
evaluate merge "$RUN" --cascade
if [ "${STUDENTS:-0}" = 1 ]; then
  for spec in "s_w4 0.5" "l_w4 0"; do
    set -- $spec
    tts-train --data "$OUT/data" --members dcnv2 --out "$OUT/runs/$1" --distill-from "$RUN" --distill-m 8 \
      --distill-alpha "$2" --width-mult 4 --distill-cache "$OUT/cache" --threads 1 -q --resume
  done
  evaluate distill "$RUN" "$OUT/runs/s_w4" "$OUT/runs/l_w4" --cascade
fi
wait
stamp "done"
