#!/usr/bin/env bash
# Set up everything and run every test: unit + end-to-end (native venv), IPEX tests
# (IPEX venv), then Ansible lint and the Molecule scenarios.
#   bash scripts/test.sh              all of it
#   SDAGENT_SKIP_IPEX=1 ...           skip the IPEX venv (4 GB download when cold)
#   SDAGENT_SKIP_ANSIBLE=1 ...        skip lint and Molecule
source "$(dirname "$0")/lib.sh"
cd "$REPO"

# The native venv, and the OpenVINO peer's: its end-to-end tests (export + one worker run on the tiny
# model) run in the native venv's pytest and start this venv's python.
bench_venvs
log "tests (native venv: $("$CACHE/venv-native/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
"$CACHE/venv-native/bin/python" -m pytest -q --durations=30 -m "not ipex" tests

if [ "${SDAGENT_SKIP_IPEX:-0}" != 1 ]; then
  venv_ipex "$CACHE/venv-ipex"
  # The IPEX recipe's own tests, then bench/verify end to end: in this venv the plan
  # picks the ipex backend, so verify proves the IPEX path under `sdagent exec`.
  log "IPEX tests (ipex venv: $("$CACHE/venv-ipex/bin/python" -c 'from importlib.metadata import version as v; print("torch", v("torch"), "ipex", v("intel_extension_for_pytorch"))'))"
  "$CACHE/venv-ipex/bin/python" -m pytest -q tests/test_ipex.py tests/test_bench_verify_cli.py
fi

if [ "${SDAGENT_SKIP_ANSIBLE:-0}" != 1 ] && [ -f .ci/ansible.sh ]; then
  log "Ansible: lint and Molecule"
  bash .ci/ansible.sh
fi
