#!/usr/bin/env bash
# The ladder from a clean clone, in one command: set up the native venv and the OpenVINO peer's
# venv, write the sd15 preset (SD-1.5's architecture, random weights; ~4 GB, once), run `sdagent ladder`.
#   bash scripts/ladder.sh                    512x512, 20 steps, whole images, 3 rounds, with OpenVINO
#   bash scripts/ladder.sh --height 256 --width 256 --steps 4     the quick ladder
#   bash scripts/ladder.sh --throughput 2     + every instance split, eager and compiled
#   bash scripts/ladder.sh --quick            smoke test on the tiny model (a minute)
#   PLAN=plan.json bash scripts/ladder.sh     measure a plan from `sdagent tune -o`
# Results (ladder.md, ladder.json, ladder.png) land in $OUT (default ./out/ladder).
source "$(dirname "$0")/lib.sh"
cd "$REPO"

bench_venvs
OUT=${OUT:-$REPO/out/ladder}
mkdir -p "$OUT"
preset=sd15
for a in "$@"; do [ "$a" = "--quick" ] && preset=tiny; done
MODEL=${MODEL:-$CACHE/models/$preset}
ensure_model "$preset" "$MODEL"

plan=()
[ -n "${PLAN:-}" ] && plan=(--plan-file "$PLAN")
log "sdagent ${plan[*]:+${plan[*]} }ladder --model $MODEL --out-dir $OUT $*"
exec "$SD" "${plan[@]}" ladder --model "$MODEL" --out-dir "$OUT" "$@"
