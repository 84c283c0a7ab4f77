#!/usr/bin/env bash
# Every figure of a docs/results/<host>/ folder in one command, from a clean clone, in one sitting:
#   1. the host's state (lscpu, memory, load, versions, commit)
#   2. `sdagent model compile` of sd15 at 512x512 (time and peak memory)
#   3. a fresh `sdagent exec -- sdagent run` with the packages built: process start to the first
#      512x512, 20-step image, and its peak memory
#   4. the ladder at the published workload (512x512, 20 steps, whole images) with the compiled
#      rung, the OpenVINO peer rung and the throughput table (every instance split, eager and
#      compiled, 2 images per instance)
#   5. `sdagent tune` twice (15-minute budget), each followed by scripts/compare_plans.py: the tuned
#      plan against stock, stock + bf16 and the topology plan, interleaved
# Hours on a 2-core VM; nothing else should run meanwhile.
#   OUT=docs/results/my-host bash scripts/host-results.sh
#   ROUNDS=3 TUNE_BUDGET=15 TUNES=2 STEPS=20 SIZE=512 OUT=... bash scripts/host-results.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO"

bench_venvs
OUT=${OUT:-$REPO/out/results}
ROUNDS=${ROUNDS:-2}
TUNES=${TUNES:-2}
TUNE_BUDGET=${TUNE_BUDGET:-15}
STEPS=${STEPS:-20}
SIZE=${SIZE:-512}
MODEL=${MODEL:-$CACHE/models/sd15}
mkdir -p "$OUT" "$OUT/ladder"
ensure_model sd15 "$MODEL"

# /usr/bin/time -v where installed (Debian: the `time` package), for wall time and peak RSS.
timed() { local tag=$1; shift
  if [ -x /usr/bin/time ]; then /usr/bin/time -v -o "$OUT/$tag.time" "$@"; else "$@"; fi; }

log "1/5 host state -> $OUT/host.txt"
{ echo "started $(date -u +%FT%TZ), commit $(git rev-parse HEAD 2>/dev/null || echo '?')"
  uptime; grep -E 'MemTotal|MemAvailable' /proc/meminfo; lscpu
  "$V/bin/python" -c 'import torch, diffusers, transformers; print("torch", torch.__version__, "diffusers", diffusers.__version__, "transformers", transformers.__version__)'
} > "$OUT/host.txt" 2>&1

log "2/5 sdagent model compile (sd15, ${SIZE}x${SIZE})"
timed compile "$SD" model compile --model "$MODEL" --height "$SIZE" --width "$SIZE" --json > "$OUT/compile.json"

log "3/5 a fresh process to its first ${SIZE}x${SIZE}, ${STEPS}-step image, packages built"
timed first-image "$SD" exec -- "$SD" run --model "$MODEL" --prompt "sailing ship in storm by Rembrandt" \
  --steps "$STEPS" --height "$SIZE" --width "$SIZE" -o "$OUT/first-image.png" --json > "$OUT/first-image.json"

log "4/5 the ladder: ${SIZE}x${SIZE}, ${STEPS} steps, $ROUNDS rounds, OpenVINO and the throughput table"
"$SD" ladder --model "$MODEL" --steps "$STEPS" --height "$SIZE" --width "$SIZE" --rounds "$ROUNDS" \
  --step-size 0 --throughput 2 --out-dir "$OUT/ladder" 2>&1 | tee "$OUT/ladder.log"

for i in $(seq "$TUNES"); do
  log "5/5 sdagent tune, run $i of $TUNES ($TUNE_BUDGET min), then the plan against stock, stock + bf16 and the topology plan"
  "$SD" tune --model "$MODEL" --budget "$TUNE_BUDGET" -o "$OUT/tune-$i.json" > "$OUT/tune-$i.txt" 2> "$OUT/tune-$i.log"
  "$V/bin/python" scripts/compare_plans.py --model "$MODEL" --plan "$OUT/tune-$i.json" \
    --out "$OUT/compare-$i.md" 2> "$OUT/compare-$i.log"
done
{ echo "ended $(date -u +%FT%TZ)"; uptime; } >> "$OUT/host.txt"
log "done: $OUT"
