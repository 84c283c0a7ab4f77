#!/usr/bin/env bash
# Issue 22's goal workload on this host, from a clean clone, as this folder's files were made:
#   OUT=docs/results/avx2-2c-512 bash docs/results/avx2-2c-512/run.sh
# SD-1.5's architecture (the sd15 preset, random weights), 512x512, 20 steps, whole images, 2 interleaved
# rounds, a fresh process each, a 2-step warm-up per process (a whole-image warm-up doubles every process:
# ~9 min each here), no per-step figure. The rungs: stock, the plan as shipped (untuned), the OpenVINO GenAI
# peer with its defaults, the openvino backend (fp32: the backend tune's precision/backend axis measures
# beside native) and the native int8 UNet (PT2E), each rung's image against stock's.
# Not measured: `backend: openvino int8-hybrid`, whose export calibrates on 200 UNet calls at 50 steps
# (~50 min of this host's time before round 1).
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-docs/results/avx2-2c-512}
mkdir -p "$OUT"
{ lscpu; echo; free -g; echo; uptime; git rev-parse --short HEAD; } > "$OUT/host.txt" 2>&1
OUT="$OUT" bash scripts/ladder.sh --rounds 2 --warmup-steps 2 --step-size 0 \
  --rungs "vanilla,shipped,openvino,backend: openvino fp32,backend: native int8" 2>&1 | tee "$OUT/ladder.log"
