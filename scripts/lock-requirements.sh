#!/usr/bin/env bash
# Regenerate requirements/<extra>.lock from pyproject.toml: every package the
# agent needs for one extra, pinned, with its sha256 hashes, wheels only. The
# sdagent and intel_openmp roles install these with
#   pip install --require-hashes --only-binary :all: -r <extra>.lock
# and then the agent's own wheel (built from this checkout) with --no-deps.
#
#   bash scripts/lock-requirements.sh              # native, ipex, openvino and iomp
#   bash scripts/lock-requirements.sh native       # one of them
#
# Re-run it whenever pyproject.toml's dependencies change: tests/test_ansible_lock.py
# fails when a lock no longer covers them.
#
# The locks are for CPython 3.11 on Linux x86_64 (the python3 of Debian
# bookworm): pip resolves for the interpreter it runs under, so run this with a
# 3.11 (SDAGENT_LOCK_PYTHON; the script refuses another minor version).
#
# Where packages come from: pip's own configuration (pip config list: index-url,
# extra-index-url, find-links), plus SDAGENT_TORCH_INDEX, your CPU-only torch
# index, when set. No package host is named here.
#
#   SDAGENT_LOCK_PYTHON   interpreter (default python3)
#   SDAGENT_LOCK_UPGRADE  1: resolve every package afresh (default: keep the committed lock's pins that still fit)
#   SDAGENT_TORCH_INDEX   your CPU-only torch index, added as an extra index ("" = none)
#   SDAGENT_TORCH_NATIVE  torch pin of native.lock and openvino.lock (default torch==2.13.0+cpu: the CPU build;
#                         a bare torch from PyPI is a multi-GB CUDA build)
#   SDAGENT_TORCH_IPEX    torch pin of ipex.lock (default torch==2.8.0+cpu; IPEX 2.8 needs 2.8.*).
#                         Where no CPU-only torch index is reachable, set it to torch==2.8.0
#                         (PyPI's CUDA build, ~4 GB with its nvidia-* wheels); the lock's
#                         header then says so.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${SDAGENT_LOCK_PYTHON:-python3}
OUT=${SDAGENT_LOCK_DIR:-$REPO/requirements}
TOOLS=${SDAGENT_LOCK_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/sdagent-lock-tools}
PIP_TOOLS_VERSION=7.6.2
TORCH_NATIVE=${SDAGENT_TORCH_NATIVE:-torch==2.13.0+cpu}
TORCH_IPEX=${SDAGENT_TORCH_IPEX:-torch==2.8.0+cpu}
EXTRAS=("$@")
[ "${#EXTRAS[@]}" -gt 0 ] || EXTRAS=(native ipex openvino iomp)

log() { printf '[lock] %s\n' "$*" >&2; }

ver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$ver" != 3.11 ] && [ -z "${SDAGENT_LOCK_ANY_PYTHON:-}" ]; then
    log "ERROR: $PY is Python $ver; the locks are for 3.11 (Debian bookworm). Set SDAGENT_LOCK_PYTHON."
    exit 2
fi

if [ ! -x "$TOOLS/bin/pip-compile" ] || ! "$TOOLS/bin/pip-compile" --version | grep -q "$PIP_TOOLS_VERSION"; then
    log "installing pip-tools $PIP_TOOLS_VERSION into $TOOLS"
    rm -rf "$TOOLS"
    "$PY" -m venv "$TOOLS"
    "$TOOLS/bin/pip" install -q "pip-tools==$PIP_TOOLS_VERSION" 2> >(grep -v 'is ignored: it is neither' >&2)
fi

mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for extra in "${EXTRAS[@]}"; do
    # The requirements of this extra, read from pyproject.toml (iomp: the
    # runtime alone, for a prefix of its own; native/ipex: the agent's base
    # dependencies too, since the agent's wheel is installed with --no-deps).
    "$PY" - "$REPO/pyproject.toml" "$extra" >"$work/$extra.in" <<'PYEOF'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
extra = sys.argv[2]
optional = project.get("optional-dependencies", {})
if extra not in optional:
    sys.exit(f"no extra {extra!r} in pyproject.toml (have: {', '.join(optional)})")
reqs = ([] if extra == "iomp" else list(project.get("dependencies", []))) + list(optional[extra])
print("\n".join(reqs))
PYEOF
    case $extra in
        native|openvino) echo "$TORCH_NATIVE" >>"$work/$extra.in" ;;
        ipex) echo "$TORCH_IPEX" >>"$work/$extra.in" ;;
    esac
    args=(--quiet --generate-hashes --allow-unsafe --strip-extras --no-header
          --no-emit-index-url --no-emit-find-links --no-emit-trusted-host --no-annotate
          --pip-args "--only-binary :all:" --output-file "$work/$extra.lock")
    [ -n "${SDAGENT_TORCH_INDEX:-}" ] && args+=(--extra-index-url "$SDAGENT_TORCH_INDEX")
    # pip-compile keeps the pins of an existing output that still satisfy the requirements: start from the
    # committed lock, so a new requirement adds its packages without moving the others (SDAGENT_LOCK_UPGRADE=1:
    # resolve everything afresh)
    if [ -f "$OUT/$extra.lock" ] && [ -z "${SDAGENT_LOCK_UPGRADE:-}" ]; then
        grep -v '^#' "$OUT/$extra.lock" >"$work/$extra.lock"
    fi
    log "resolving $extra ($(paste -sd' ' "$work/$extra.in"))"
    (cd "$work" && "$TOOLS/bin/pip-compile" "${args[@]}" "$extra.in") \
        2> >(grep -v 'is ignored: it is neither' >&2)
    if [ "$extra" = openvino ]; then
        # optimum-intel requires torchvision, but PyPI's wheel is a CUDA build that fails beside the CPU
        # torch and breaks `import transformers` (so the export); the SD export never uses it: dropped.
        awk '/^[A-Za-z0-9]/ { skip = ($0 ~ /^torchvision==/) } !skip' "$work/$extra.lock" >"$work/$extra.lock.f"
        mv "$work/$extra.lock.f" "$work/$extra.lock"
    fi
    torch_line=$(grep -E '^torch==' "$work/$extra.lock" | cut -d' ' -f1 || true)
    {
        echo "# requirements/$extra.lock: generated by scripts/lock-requirements.sh from pyproject.toml; do not edit."
        echo "# Extra '$extra' for CPython 3.11, Linux x86_64. Install with:"
        echo "#   pip install --require-hashes --only-binary :all: --no-deps -r $extra.lock"
        if [ -n "$torch_line" ] && [[ "$torch_line" != *+cpu* ]]; then
            echo "# NOTE: $torch_line is PyPI's CUDA build (no CPU-only torch index was reachable when this"
            echo "# was generated); re-run with SDAGENT_TORCH_INDEX=<your CPU-only torch index> for the +cpu build."
        fi
        [ "$extra" = openvino ] && echo "# torchvision (optimum-intel's dependency, a CUDA build on PyPI) is left out: the export does not use it."
        echo "# Requirements: $(paste -sd' ' "$work/$extra.in")"
        cat "$work/$extra.lock"
    } >"$OUT/$extra.lock.tmp"
    mv "$OUT/$extra.lock.tmp" "$OUT/$extra.lock"
    log "wrote $OUT/$extra.lock ($(grep -cE '^[A-Za-z0-9]' "$OUT/$extra.lock") packages)"
done
