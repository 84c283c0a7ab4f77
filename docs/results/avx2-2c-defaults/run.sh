#!/usr/bin/env bash
# The evidence-based derived plan against stock on a 2-core AVX2 host (issue 21's goal: the untuned
# plan >= 1.0x stock on every host class measured). Run from the repo root with the native venv
# (bash scripts/test.sh or scripts/quickstart.sh creates it):
#   bash docs/results/avx2-2c-defaults/run.sh        # writes into $OUT (default: this folder)
# Four configurations, interleaved rounds with the order rotated, a fresh process each
# (scripts/compare_plans.py): stock (fp32 eager), stock + bf16, the derived plan, and the derived
# plan with jemalloc + libiomp5 preloaded (the seed's first lever) as "tuned plan".
# Not yet run to its end: on a 2-core AVX2 VM each process is minutes (fp32, and bf16 emulated),
# so the three rounds take about an hour on an otherwise idle host.
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-docs/results/avx2-2c-defaults}
PY=${PY:-$HOME/.cache/sdagent/venv-native/bin/python}
MODEL=${MODEL:-/tmp/sd15}
ROUNDS=${ROUNDS:-3}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/agent PYTHONUNBUFFERED=1
SD="$PY -m sdagent"
{ lscpu; echo; free -g; echo; uptime; git rev-parse --short HEAD; "$PY" -c 'import torch, diffusers, transformers; print("torch", torch.__version__, "diffusers", diffusers.__version__, "transformers", transformers.__version__)'; } > "$OUT/host.txt" 2>&1
$SD topology --json > "$OUT/topology.json"
$SD plan --json -o "$OUT/plan-derived.json" >/dev/null
$SD plan --set allocator=jemalloc --set omp_runtime=intel --json -o "$OUT/plan-preloads.json" >/dev/null
[ -f "$MODEL/model_index.json" ] || { echo "$(date +%T) model create"; $SD model create --preset sd15 "$MODEL" >/dev/null; }
echo "$(date +%T) compare"
"$PY" scripts/compare_plans.py --model "$MODEL" --plan "$OUT/plan-preloads.json" --rounds "$ROUNDS" --repeats 2 \
  --out "$OUT/compare.md" 2> "$OUT/compare.log"
echo "$(date +%T) done"
