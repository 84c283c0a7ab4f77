# Shared by scripts/*.sh: system packages and the two venvs, cached between runs.
# shellcheck shell=bash
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${SDAGENT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sdagent}
PY=${PYTHON:-python3}
# torch 2.13's CPU wheel: a bare `torch` would pull a multi-GB CUDA build.
TORCH_NATIVE=${SDAGENT_TORCH:-torch==2.13.0}

log() { printf '\n==> %s\n' "$*" >&2; }
# pip, minus the warnings some machines' pip.conf index locations print.
pip_q() { local v=$1; shift; "$v/bin/pip" install -q --disable-pip-version-check "$@" \
  2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2); }

# Debian/Ubuntu packages the agent preloads or launches with (skipped when present).
system_packages() {
  local want=(numactl libjemalloc2 libgoogle-perftools4 util-linux)
  local missing=()
  for p in "${want[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
}

# venv_native DIR: torch 2.13 CPU + diffusers + the agent (editable) + intel-openmp + pytest.
venv_native() {
  local v=$1
  [ -x "$v/bin/python" ] || { log "creating $v"; "$PY" -m venv "$v"; }
  if ! "$v/bin/python" -c 'import torch, torchao, diffusers, transformers, sdagent, pytest' 2>/dev/null \
     || [ "$REPO" != "$("$v/bin/python" -c 'import sdagent, pathlib; print(pathlib.Path(sdagent.__file__).resolve().parents[2])' 2>/dev/null)" ]; then
    log "installing the native stack into $v"
    pip_q "$v" "$TORCH_NATIVE"
    pip_q "$v" -e "$REPO[native,iomp,test]" "$TORCH_NATIVE"
  fi
}

# venv_ipex DIR: IPEX 2.8 (its last CPU release) needs torch 2.8, transformers<5, diffusers 0.39.
venv_ipex() {
  local v=$1
  [ -x "$v/bin/python" ] || { log "creating $v"; "$PY" -m venv "$v"; }
  if ! "$v/bin/python" -c 'import intel_extension_for_pytorch, diffusers, sdagent, pytest' >/dev/null 2>&1 \
     || [ "$REPO" != "$("$v/bin/python" -c 'import sdagent, pathlib; print(pathlib.Path(sdagent.__file__).resolve().parents[2])' 2>/dev/null)" ]; then
    log "installing the IPEX stack into $v (torch 2.8 is a ~4 GB CUDA build on PyPI; cached afterwards)"
    pip_q "$v" -e "$REPO[ipex,iomp,test]"
  fi
}

# agent_venv: the system packages and the native venv; sets V and SD (its sdagent).
agent_venv() {
  system_packages
  V="$CACHE/venv-native"
  venv_native "$V"
  SD="$V/bin/sdagent"
}

# ensure_model PRESET DIR: write a random-weights preset pipeline once.
ensure_model() {
  local preset=$1 dir=$2
  [ -f "$dir/model_index.json" ] && return 0
  mkdir -p "$(dirname "$dir")"
  log "sdagent model create --preset $preset $dir"
  "$SD" model create --preset "$preset" "$dir"
}

# venv_openvino DIR: backend openvino and the OpenVINO peer (agent/sdagent/peers/): OpenVINO, GenAI and
# tokenizers 2026.4.1, optimum-intel 2.2.0 with torch 2.13 CPU and diffusers for the offline export (it
# traces the PyTorch model), and the agent itself (editable, --no-deps: the `openvino` extra's stack is
# what is installed here), so `DIR/bin/sdagent --backend openvino ...` runs in it. The peer's worker
# still runs with PYTHONPATH=<repo>/agent (the ladder's side does not depend on the editable install).
# optimum-intel pins transformers<5.6 and huggingface-hub<1.22, so pip picks those (and diffusers to
# match). It also pulls torchvision, whose PyPI wheel is a CUDA build that fails to load beside the CPU
# torch and breaks `import transformers`; the SD export does not use it, so it is removed.
venv_openvino() {
  local v=$1
  local pins=(openvino==2026.4.1 openvino-genai==2026.4.1.0 openvino-tokenizers==2026.4.1.0 optimum-intel==2.2.0)
  [ -x "$v/bin/python" ] || { log "creating $v"; "$PY" -m venv "$v"; }
  if ! "$v/bin/python" - "${pins[@]}" "$TORCH_NATIVE" 2>/dev/null <<'PYCHECK'
import importlib.metadata as md, importlib.util, sys
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    if md.version(name).split("+")[0] != want:
        sys.exit(1)
if importlib.util.find_spec("torchvision") is not None:
    sys.exit(1)
import openvino_genai, openvino_tokenizers  # noqa: F401  (the binary parts: they must load together)
import click, jinja2, psutil, yaml, skimage  # noqa: F401  (the agent's own dependencies: it is installed --no-deps)
PYCHECK
  then
    log "installing the OpenVINO stack into $v (${pins[*]}, $TORCH_NATIVE, diffusers)"
    pip_q "$v" "$TORCH_NATIVE"
    pip_q "$v" "${pins[@]}" "$TORCH_NATIVE" diffusers click jinja2 psutil pyyaml scikit-image
    "$v/bin/pip" uninstall -y -q torchvision 2>/dev/null || true
  fi
  if [ "$REPO" != "$("$v/bin/python" -c 'import sdagent, pathlib; print(pathlib.Path(sdagent.__file__).resolve().parents[2])' 2>/dev/null)" ]; then
    log "installing the agent (editable, --no-deps) into $v"
    pip_q "$v" --no-deps -e "$REPO"
  fi
}

# bench_venvs: the agent's venv (agent_venv) and the OpenVINO peer's, exported for the ladder's rung.
bench_venvs() {
  agent_venv
  venv_openvino "$CACHE/venv-openvino"
  export SDAGENT_OPENVINO_PYTHON="$CACHE/venv-openvino/bin/python"
}
