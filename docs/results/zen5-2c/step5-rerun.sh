#!/usr/bin/env bash
# scripts/host-results.sh's step 5, again at commit ec7ab06 (the reserve fix): two tunes, then each plan
# against stock, stock + bf16 and the topology plan; the same commands as host-results.sh.
set -u
cd /tmp/hr
OUT=/tmp/hr/docs/results/zen5-2c
SD=/root/.cache/sdagent/venv-native/bin/sdagent
V=/root/.cache/sdagent/venv-native
MODEL=/root/.cache/sdagent/models/sd15
echo "commit $(git rev-parse --short HEAD)"
for i in 3 4; do
  echo "tune $i start $(date -u +%T)"
  "$SD" tune --model "$MODEL" --budget 15 -o "$OUT/tune-$i.json" > "$OUT/tune-$i.txt" 2> "$OUT/tune-$i.log"
  echo "tune $i rc $? end $(date -u +%T)"
done
for i in 3 4; do
  echo "compare $i start $(date -u +%T)"
  "$V/bin/python" scripts/compare_plans.py --model "$MODEL" --plan "$OUT/tune-$i.json" --out "$OUT/compare-$i.md" 2> "$OUT/compare-$i.log"
  echo "compare $i rc $? end $(date -u +%T)"
done
{ echo "ended $(date -u +%FT%TZ)"; uptime; } >> "$OUT/host.txt"
