#!/usr/bin/env bash
# Set up everything and run every test: unit + end-to-end (native venv), IPEX tests
# (IPEX venv), then Ansible lint and the Molecule scenarios.
#   bash scripts/test.sh              all of it
#   SDAGENT_SKIP_IPEX=1 ...           skip the IPEX venv (4 GB download when cold)
#   SDAGENT_SKIP_ANSIBLE=1 ...        skip lint and Molecule
source "$(dirname "$0")/lib.sh"
cd "$REPO"

system_packages
venv_native "$CACHE/venv-native"
log "tests (native venv: $("$CACHE/venv-native/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
"$CACHE/venv-native/bin/python" -m pytest -q -m "not ipex" tests

if [ "${SDAGENT_SKIP_IPEX:-0}" != 1 ]; then
  venv_ipex "$CACHE/venv-ipex"
  log "IPEX tests (ipex venv)"
  "$CACHE/venv-ipex/bin/python" -m pytest -q -m ipex tests
fi

if [ "${SDAGENT_SKIP_ANSIBLE:-0}" != 1 ] && [ -f .ci/ansible.sh ]; then
  log "Ansible: lint and Molecule"
  bash .ci/ansible.sh
fi
