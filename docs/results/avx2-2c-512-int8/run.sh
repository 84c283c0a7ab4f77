#!/usr/bin/env bash
# Issue 22's int8 goal on this host class, from a clean clone, as this folder's files were made:
#   OUT=docs/results/avx2-2c-512-int8 bash docs/results/avx2-2c-512-int8/run.sh
# Step 1 builds the int8-hybrid OpenVINO export of the sd15 preset once (NNCF's hybrid quantization through
# optimum-intel, calibrated on 200 UNet calls at 50 steps: more than 2 h on 2 cores; a no-op when built).
# Step 2 is the ladder at the published workload (SD-1.5's architecture, random weights, 512x512, 20 steps,
# whole images), one round (the session's time left no second: ~13 min a round here), a fresh process each, a
# 2-step warm-up per process: stock (the fidelity reference), the OpenVINO GenAI peer with its defaults and
# the openvino backend on that int8-hybrid export, each rung's image against stock's. The native int8 UNet's
# figures are avx2-2c-512's, from the run before.
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-docs/results/avx2-2c-512-int8}
mkdir -p "$OUT"
source scripts/lib.sh
bench_venvs
{ lscpu; echo; free -g; echo; uptime; git rev-parse --short HEAD; } > "$OUT/host.txt" 2>&1
MODEL=$CACHE/models/sd15
ensure_model sd15 "$MODEL"
OVPY=$CACHE/venv-openvino/bin/python
"$OVPY" -m sdagent plan --set backend=openvino --set precision=fp32 --set ov_weights=int8-hybrid -o "$OUT/plan-int8-hybrid.json"
{ time "$OVPY" -m sdagent --plan-file "$OUT/plan-int8-hybrid.json" model compile --model "$MODEL" --height 512 --width 512 --json; } \
  > "$OUT/export.json" 2> "$OUT/export.log"
OUT="$OUT" MODEL="$MODEL" bash scripts/ladder.sh --rounds 1 --warmup-steps 2 --step-size 0 \
  --rungs "vanilla,openvino,backend: openvino int8-hybrid" 2>&1 | tee "$OUT/ladder.log"
