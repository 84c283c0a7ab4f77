#!/usr/bin/env bash
# The few-step ladder (issue 23 item 5) on this host, from a clean clone, as this folder's files were made:
#   OUT=docs/results/avx2-2c-fewstep bash docs/results/avx2-2c-fewstep/run.sh
# Two rounds, no compiled rung (the plan derived on an AVX2 host does not compile: fp32, compiled only
# where `sdagent tune` measures it faster), no per-step figure; each workload's ladder measures the few-step
# default rungs (stock, the shipped plan, the OpenVINO GenAI peer, the openvino backend).
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-docs/results/avx2-2c-fewstep}
mkdir -p "$OUT"
{ lscpu; echo; free -g; echo; uptime; git rev-parse --short HEAD; } > "$OUT/host.txt" 2>&1
OUT="$OUT" bash scripts/ladder.sh --few-step --rounds 2 --no-compile --step-size 0 2>&1 | tee "$OUT/ladder.log"
