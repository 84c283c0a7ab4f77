#!/usr/bin/env bash
# The main job on the embedded default: set up, make a tiny random-weights pipeline,
# show this host's plan, then prove it with `sdagent verify` under the tuned plan.
#   bash scripts/quickstart.sh                 tiny pipeline, shipped example targets
#   MODEL=/path/to/sd15 bash scripts/quickstart.sh   your own diffusers directory
source "$(dirname "$0")/lib.sh"
cd "$REPO"

agent_venv
OUT=${OUT:-$REPO/out}
mkdir -p "$OUT"
MODEL=${MODEL:-$CACHE/models/tiny}
ensure_model tiny "$MODEL"

log "sdagent plan"
"$SD" plan -o "$OUT/plan.json"

log "sdagent exec -- sdagent verify (reports in $OUT)"
set +e
"$SD" --plan-file "$OUT/plan.json" exec -- "$SD" verify --model "$MODEL" \
  --targets "${TARGETS:-$REPO/examples/targets.yml}" \
  --report "$OUT/verify.json" --prometheus "$OUT/sdagent.prom"
rc=$?
set -e
log "verify exit code: $rc (0 pass; see README: Exit codes)"
exit $rc
