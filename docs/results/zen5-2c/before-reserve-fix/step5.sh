#!/usr/bin/env bash
# The rest of scripts/host-results.sh's step 5, run after the ladder: both tunes back to back, then one
# comparison (the session's time did not cover a second); the same commands as host-results.sh.
set -u
cd /tmp/hr
OUT=/tmp/hr/docs/results/zen5-2c
SD=/root/.cache/sdagent/venv-native/bin/sdagent
V=/root/.cache/sdagent/venv-native
MODEL=/root/.cache/sdagent/models/sd15
while kill -0 10392 2>/dev/null; do sleep 5; done
for i in 1 2; do
  echo "tune $i start $(date -u +%T)"
  "$SD" tune --model "$MODEL" --budget 15 -o "$OUT/tune-$i.json" > "$OUT/tune-$i.txt" 2> "$OUT/tune-$i.log"
  echo "tune $i rc $? end $(date -u +%T)"
done
"$V/bin/python" scripts/compare_plans.py --model "$MODEL" --plan "$OUT/tune-1.json" --out "$OUT/compare-1.md" 2> "$OUT/compare-1.log"
echo "compare rc $? end $(date -u +%T)"
{ echo "ended $(date -u +%FT%TZ)"; uptime; } >> "$OUT/host.txt"
