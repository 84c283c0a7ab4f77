#!/usr/bin/env bash
# The ladder from a clean clone, in one command: set up the native venv and the OpenVINO peer's
# venv, write the sd15 preset (SD-1.5's architecture, random weights; ~4 GB, once), run `sdagent ladder`.
#   bash scripts/ladder.sh                    512x512, 20 steps, whole images, 3 rounds, with OpenVINO
#   bash scripts/ladder.sh --height 256 --width 256 --steps 4     the quick ladder
#   bash scripts/ladder.sh --throughput 2     + every instance split, eager and compiled
#   bash scripts/ladder.sh --quick            smoke test on the tiny model (a minute)
#   bash scripts/ladder.sh --few-step         FastSD CPU's workloads (measuring/ladder_fewstep.py): SD-Turbo
#                                             1 step with TAESD and with the full VAE, SDXL-Turbo 1 step with
#                                             TAESDXL, LCM (SD 1.5) 4 steps, all 512x512, each a ladder with the
#                                             OpenVINO peer; writes $OUT/<workload>/ and $OUT/few-step.md.
#                                             Writes sd-turbo, sdxl-turbo (~7 GB) and lcm models once.
#                                             Measures stock, the shipped plan, the peer and the openvino
#                                             backend (ladder_fewstep.DEFAULT_RUNGS) unless --rungs is given.
#   PLAN=plan.json bash scripts/ladder.sh     measure a plan from `sdagent tune -o`
# Results (ladder.md, ladder.json, ladder.png) land in $OUT (default ./out/ladder).
source "$(dirname "$0")/lib.sh"
cd "$REPO"

few=0
args=()
for a in "$@"; do
  if [ "$a" = "--few-step" ]; then few=1; else args+=("$a"); fi
done

bench_venvs
OUT=${OUT:-$REPO/out/ladder}
mkdir -p "$OUT"
plan=()
[ -n "${PLAN:-}" ] && plan=(--plan-file "$PLAN")

if [ "$few" = 1 ]; then
  MODELS=${MODELS:-$CACHE/models}
  # the runs, one shell-quoted line each; exit 2 on a ladder option the workloads fix (--model, --steps, ...)
  runs=$(PYTHONPATH="$REPO/agent" "$V/bin/python" -m sdagent.measuring.ladder_fewstep runs "$MODELS" "$OUT" \
         ${args[@]+"${args[@]}"}) || exit 2
  case " ${args[*]-} " in
    *" --rungs"*) ;;
    *) args+=(--rungs "$(PYTHONPATH="$REPO/agent" "$V/bin/python" -m sdagent.measuring.ladder_fewstep rungs)") ;;
  esac
  while IFS= read -r line; do
    eval "set -- $line"
    name=$1 preset=$2 model=$3 tae=$4 taedir=$5 out=$6 vae=$7 steps=$8 height=$9 width=${10} ov=${11}
    ensure_model "$preset" "$model"
    if [ "$tae" != - ] && [ ! -f "$taedir/config.json" ]; then
      log "sdagent model create --preset $tae $taedir"
      "$SD" model create --preset "$tae" "$taedir"
    fi
    mkdir -p "$out"
    "$SD" "${plan[@]}" plan --set "vae=$vae" -o "$out/plan.json" >/dev/null
    log "$name: sdagent --plan-file $out/plan.json ladder --model $model --steps $steps ${args[*]}"
    "$SD" --plan-file "$out/plan.json" ladder --model "$model" --steps "$steps" --height "$height" \
      --width "$width" --out-dir "$out" --"$ov" ${args[@]+"${args[@]}"} </dev/null \
      || log "$name: the ladder failed (exit $?); the table says so"
  done <<<"$runs"
  exec env PYTHONPATH="$REPO/agent" "$V/bin/python" -m sdagent.measuring.ladder_fewstep table "$OUT"
fi

preset=sd15
for a in "$@"; do [ "$a" = "--quick" ] && preset=tiny; done
MODEL=${MODEL:-$CACHE/models/$preset}
ensure_model "$preset" "$MODEL"

log "sdagent ${plan[*]:+${plan[*]} }ladder --model $MODEL --out-dir $OUT $*"
exec "$SD" "${plan[@]}" ladder --model "$MODEL" --out-dir "$OUT" "$@"
