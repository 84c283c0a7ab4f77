#!/usr/bin/env bash
# Set up everything and run every test: unit + end-to-end (native venv), IPEX tests
# (IPEX venv), Ansible lint and the Molecule scenarios.
#   bash scripts/test.sh              all of it
#   SDAGENT_SKIP_IPEX=1 ...           skip the IPEX venv (4 GB download when cold)
#   SDAGENT_SKIP_ANSIBLE=1 ...        skip lint and Molecule
#   SDAGENT_TEST_SERIAL=1 ...         run lint and Molecule after the Python tests, not beside them
#
# Lint and Molecule run beside the Python tests by default: the suite keeps about one core
# busy and Molecule mostly waits on Ansible, podman and pip, so side by side the whole run
# takes little more than its longest half. Their log is printed when both have ended; the
# exit status is the first failure's.
source "$(dirname "$0")/lib.sh"
cd "$REPO"

# The native venv, and the OpenVINO peer's: its end-to-end tests (export + one worker run on the tiny
# model) run in the native venv's pytest and start this venv's python.
bench_venvs

ANSIBLE_PID="" ANSIBLE_LOG=""
if [ "${SDAGENT_SKIP_ANSIBLE:-0}" != 1 ] && [ -f .ci/ansible.sh ]; then
  # The tools, the image and the wheelhouse first, in the foreground: the suite's playbook tests
  # use the same ansible-playbook.
  log "Ansible: tools, base image and wheelhouse"
  SDAGENT_CI_PREPARE_ONLY=1 bash .ci/ansible.sh
  if [ "${SDAGENT_TEST_SERIAL:-0}" != 1 ]; then
    ANSIBLE_LOG=$(mktemp "${TMPDIR:-/tmp}/sdagent-ansible.XXXXXX.log")
    log "Ansible: lint and Molecule, beside the Python tests (their log: $ANSIBLE_LOG, printed at the end)"
    setsid bash .ci/ansible.sh >"$ANSIBLE_LOG" 2>&1 &
    ANSIBLE_PID=$!
    # an interrupted run stops Molecule too (its containers are removed by its next run's destroy)
    trap '[ -z "$ANSIBLE_PID" ] || kill -- "-$ANSIBLE_PID" 2>/dev/null || true; exit 130' INT TERM
  fi
fi

rc=0
log "tests (native venv: $("$CACHE/venv-native/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
"$CACHE/venv-native/bin/python" -m pytest -q --durations=30 -m "not ipex" tests || rc=$?

if [ "${SDAGENT_SKIP_IPEX:-0}" != 1 ]; then
  venv_ipex "$CACHE/venv-ipex"
  # The IPEX recipe's own tests, then bench and verify end to end: in this venv the plan
  # picks the ipex backend, so verify proves the IPEX path under `sdagent exec`. Only those two:
  # the file's other tests (exit codes, targets, stock) do not depend on the backend and ran above.
  log "IPEX tests (ipex venv: $("$CACHE/venv-ipex/bin/python" -c 'from importlib.metadata import version as v; print("torch", v("torch"), "ipex", v("intel_extension_for_pytorch"))'))"
  "$CACHE/venv-ipex/bin/python" -m pytest -q tests/test_ipex.py \
    tests/test_bench_verify_cli.py::test_bench_json_with_machine_state \
    tests/test_bench_verify_cli.py::test_verify_passes_under_exec || { r=$?; [ "$rc" != 0 ] || rc=$r; }
fi

if [ -n "$ANSIBLE_PID" ]; then
  log "Python tests ended (exit $rc); waiting for lint and Molecule"
  arc=0
  wait "$ANSIBLE_PID" || arc=$?
  ANSIBLE_PID=""
  cat "$ANSIBLE_LOG"
  rm -f "$ANSIBLE_LOG"
  log "Ansible: lint and Molecule exit $arc"
  [ "$rc" != 0 ] || rc=$arc
elif [ "${SDAGENT_SKIP_ANSIBLE:-0}" != 1 ] && [ -f .ci/ansible.sh ]; then
  log "Ansible: lint and Molecule"
  bash .ci/ansible.sh || { r=$?; [ "$rc" != 0 ] || rc=$r; }
fi
exit "$rc"
