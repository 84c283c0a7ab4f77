#!/usr/bin/env bash
# The evidence-based derived plan against stock on the 16-core AMX host of a lent accelerator machine
# (offline; torch is the image's own CUDA build, run on the CPU). Run from the repo root there, with
# .dev/ carried in from the dev machine (see ../amx-16c/setup.sh for what .dev/ holds):
#   bash docs/results/amx-16c-defaults/run.sh      # writes into $OUT
# Four configurations, 3 interleaved rounds, a fresh process each (scripts/compare_plans.py):
# stock (fp32 eager), stock + bf16, the derived plan (the evidence-based defaults: no preloads),
# and the derived plan with jemalloc + libiomp5 preloaded (the seed's first lever) as "tuned plan".
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if [ ! -e /tmp/site/diffusers ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .dev/whl/*.whl || exit 1
  for f in .dev/deb/*.deb; do dpkg -x "$f" /; done
  install -m 0755 .dev/lib/libiomp5.so /usr/local/lib/libiomp5.so
  ldconfig
fi
export PYTHONPATH=$PWD/agent:/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
SD="python3 -m sdagent"
{ lscpu; echo; free -g; echo; uptime; python3 -c 'import torch; print("torch", torch.__version__)'; } > "$OUT/lscpu.txt" 2>&1
$SD topology --json > "$OUT/topology.json"
$SD plan --json -o "$OUT/plan-derived.json" || exit 1
$SD plan --set allocator=jemalloc --set omp_runtime=intel --json -o "$OUT/plan-preloads.json" || exit 1
echo "$(date +%T) model create"; $SD model create --preset sd15 /tmp/sd15 >/dev/null || exit 1
echo "$(date +%T) model compile"; $SD model compile --model /tmp/sd15 --height 256 --width 256 --json > "$OUT/compile.json"
echo "$(date +%T) compare"
python3 scripts/compare_plans.py --model /tmp/sd15 --plan "$OUT/plan-preloads.json" --rounds 3 --repeats 2 \
  --out "$OUT/compare.md" 2> "$OUT/compare.log"
echo "$(date +%T) done"
