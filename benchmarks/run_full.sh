#!/usr/bin/env bash
# Full medsam-lite benchmark: baseline (LiteMedSAM, no cache, one box at a time) vs ours (Predictor),
# writing benchmark.json / benchmark.md / benchmark.png into docs/benchmark/ (or $OUT): `medsam-lite benchmark speed`.
#
#   benchmarks/run_full.sh                      # defaults below
#   MAX_CALLS=12 SCALING_MAX_CALLS=60 benchmarks/run_full.sh --slices 5 10 20   # extra args go to `medsam-lite benchmark`
#
# MAX_CALLS caps the baseline's encoder calls (3D) / decoder calls (2D) per measurement: bigger cases
# are measured on a labelled subset (both paths on the same subset), bigger scaling cells are skipped.
# Nothing is extrapolated. Leave the machine otherwise idle while it runs.
#
# BACKENDS (opt-in, default empty) adds the backend comparison for the first model (lite_medsam):
#   BACKENDS="torch:fp32 torchscript onnxruntime:fp32 onnxruntime:int8" benchmarks/run_full.sh
# (registry BACKEND:PRECISION names; torchscript is the exported artifact; the old names eager /
# onnxruntime / onnxruntime-int8 are still accepted)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-docs/benchmark}"
THREADS="${THREADS:-2}"
MAX_CALLS="${MAX_CALLS:-60}"
BACKEND_ARGS=()
if [ -n "${BACKENDS:-}" ]; then
    read -r -a BACKEND_LIST <<< "$BACKENDS"
    BACKEND_ARGS=(--backends "${BACKEND_LIST[@]}")
fi
mkdir -p "$OUT"
exec medsam-lite benchmark speed -o "$OUT" --threads "$THREADS" --repeats "${REPEATS:-5}" \
    --models lite_medsam "random:repvit_m0_6+fused" --baseline-model lite_medsam \
    --max-calls "$MAX_CALLS" --scaling-max-calls "${SCALING_MAX_CALLS:-$MAX_CALLS}" --scaling-model "${SCALING_MODEL:-random:repvit_m0_6+fused}" \
    ${BACKEND_ARGS[@]+"${BACKEND_ARGS[@]}"} "$@"
