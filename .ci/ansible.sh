#!/usr/bin/env bash
# Lint the Ansible content and run every Molecule scenario on Debian bookworm
# system containers (podman + runc, base image imported from a debootstrap
# rootfs; no registry and no Docker engine needed).
#
#   bash .ci/ansible.sh                 # lint + all scenarios
#   SDAGENT_CI_SCENARIOS="jemalloc fleet" bash .ci/ansible.sh   # a subset
#   SDAGENT_CI_SKIP_LINT=1 / SDAGENT_CI_SKIP_MOLECULE=1
#
# Everything it downloads or builds is cached under
# ${SDAGENT_CI_CACHE:-$HOME/.cache/sdagent-ci}: the tool venv, the rootfs
# tarball and the wheelhouse the target hosts install from (offline, as a fleet
# without Internet access would). A warm run only re-runs lint and Molecule.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${SDAGENT_CI_CACHE:-$HOME/.cache/sdagent-ci}
SCENARIOS=${SDAGENT_CI_SCENARIOS:-"jemalloc intel_openmp numactl sdagent tuned_env fleet"}
MIRROR=${SDAGENT_CI_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PY=${SDAGENT_CI_PYTHON:-python3}
START=$(date +%s)

log() { printf '[ansible.sh +%ss] %s\n' "$(($(date +%s) - START))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
sha() { cat "$@" | sha256sum | cut -c1-12; }
# pip, minus the noise of index locations configured on some machines
pip_() { "$VENV/bin/pip" "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2); }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "run as root or install sudo (podman runs rootful here)"
    SUDO="sudo"
fi
mkdir -p "$CACHE"

# --- 1. OS packages ------------------------------------------------------------
APT_PKGS=(podman runc conmon netavark aardvark-dns iptables uidmap slirp4netns fuse-overlayfs debootstrap python3-venv python3-pip ca-certificates)
missing=()
for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# podman: runc and explicit ulimits, scoped to this script (no global change).
export CONTAINERS_CONF="$REPO/.ci/ansible/containers.conf"

# --- 2. controller tools venv ---------------------------------------------------
VENV="$CACHE/venv-$(sha "$REPO/.ci/ansible/requirements.txt")"
if [ ! -x "$VENV/bin/molecule" ]; then
    log "creating tool venv $VENV"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    pip_ install -q --upgrade pip
    pip_ install -q -r "$REPO/.ci/ansible/requirements.txt"
fi
export PATH="$VENV/bin:$PATH"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 NO_COLOR=1 ANSIBLE_NOCOLOR=1

# --- 3. base image: debootstrap rootfs -> podman import ------------------------
ROOTFS_VERSION=v2   # bump when the recipe below changes
ROOTFS="$CACHE/rootfs/bookworm-minbase-$ROOTFS_VERSION.tar.gz"
if [ ! -s "$ROOTFS" ]; then
    log "debootstrap bookworm rootfs (once; cached at $ROOTFS)"
    mkdir -p "$CACHE/rootfs"
    work=$(mktemp -d "$CACHE/rootfs/build.XXXXXX")
    $SUDO debootstrap --variant=minbase --include=python3,python3-apt bookworm "$work/root" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
        || { tail -20 "$work/debootstrap.log"; die "debootstrap failed"; }
    r="$work/root"
    $SUDO sh -c "rm -f '$r'/var/cache/apt/archives/*.deb '$r'/var/lib/apt/lists/*_* '$r'/etc/hostname
        printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n' '$MIRROR' '$MIRROR' >'$r'/etc/apt/sources.list
        # an old mtime makes apt's cache_valid_time refresh the (empty) lists
        touch -d 2000-01-01 '$r'/var/lib/apt/lists
        tar --numeric-owner -C '$r' -czf '$ROOTFS.tmp' .
        mv '$ROOTFS.tmp' '$ROOTFS'
        rm -rf --one-file-system '$work'"
fi
IMAGE="localhost/sdagent-bookworm:$ROOTFS_VERSION-$(sha "$ROOTFS" | cut -c1-8)"
if ! $SUDO podman image exists "$IMAGE"; then
    log "podman import $IMAGE"
    $SUDO podman import --change 'CMD ["sleep","infinity"]' "$ROOTFS" "$IMAGE" >/dev/null
fi
export SDAGENT_MOLECULE_IMAGE="$IMAGE"

# --- 4. wheelhouse the target hosts install from (offline) ----------------------
# The agent wheel itself is built by playbooks/build_wheel.yml on every run; the
# wheelhouse holds its dependencies, the CPU torch wheel and intel-openmp.
WHEELHOUSE="$CACHE/wheelhouse"
WHEELHOUSE_VERSION=v1   # bump when the recipe below changes
mkdir -p "$WHEELHOUSE"
if [ ! -f "$WHEELHOUSE/.base-$WHEELHOUSE_VERSION" ]; then
    log "filling wheelhouse $WHEELHOUSE (torch CPU, intel-openmp)"
    if ! ls "$WHEELHOUSE"/torch-*+cpu-*.whl >/dev/null 2>&1; then
        # CPU-only torch: a local +cpu wheel if the machine has one, else the
        # PyTorch CPU index, else PyPI (large CUDA build; still works).
        local_torch=$(ls /opt/wheels/torch-*+cpu-cp311-*.whl 2>/dev/null | sort -V | tail -1 || true)
        if [ -n "$local_torch" ]; then
            cp "$local_torch" "$WHEELHOUSE/"
        else
            pip_ download -q --no-deps --only-binary=:all: -d "$WHEELHOUSE" \
                --index-url https://download.pytorch.org/whl/cpu torch \
              || pip_ download -q --no-deps --only-binary=:all: -d "$WHEELHOUSE" torch
        fi
    fi
    pip_ download -q --only-binary=:all: -d "$WHEELHOUSE" intel-openmp packaging
    touch "$WHEELHOUSE/.base-$WHEELHOUSE_VERSION"
fi
# The agent's dependencies, refreshed when pyproject.toml changes.
if [ -f "$REPO/pyproject.toml" ]; then
    WH_KEY=$(sha "$REPO/pyproject.toml")
    if [ ! -f "$WHEELHOUSE/.deps-$WH_KEY" ]; then
        log "adding the agent's dependencies to the wheelhouse"
        torch_whl=$(ls "$WHEELHOUSE"/torch-*.whl | sort -V | tail -1)
        printf 'torch==%s\n' "$(basename "$torch_whl" | cut -d- -f2)" >"$CACHE/torch-pin.txt"
        pip_ wheel -q -w "$WHEELHOUSE" --find-links "$WHEELHOUSE" \
            -c "$CACHE/torch-pin.txt" "$REPO[native,iomp]"
        rm -f "$WHEELHOUSE"/sdagent-*.whl "$WHEELHOUSE"/.deps-*
        touch "$WHEELHOUSE/.deps-$WH_KEY"
    fi
else
    log "WARNING: no pyproject.toml; the agent scenarios will fail"
fi
export SDAGENT_WHEELHOUSE="$WHEELHOUSE"
# CA bundle of this machine, mounted into the targets for pip behind a
# TLS-inspecting proxy (only used when a scenario goes online).
export SDAGENT_CA_BUNDLE=${SDAGENT_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
log "tools, image $IMAGE and wheelhouse ready"

if [ -n "${SDAGENT_CI_PREPARE_ONLY:-}" ]; then
    log "prepared (SDAGENT_CI_PREPARE_ONLY set): not running lint or molecule"
    exit 0
fi

# --- 5. lint ---------------------------------------------------------------------
cd "$REPO"
if [ -z "${SDAGENT_CI_SKIP_LINT:-}" ]; then
    log "ansible-lint --profile production"
    ansible-lint --profile production roles/ playbooks/ molecule/
fi

# --- 6. molecule -------------------------------------------------------------------
failed=()
if [ -z "${SDAGENT_CI_SKIP_MOLECULE:-}" ]; then
    for s in $SCENARIOS; do
        t0=$(date +%s)
        if [ "$s" = fleet ]; then
            dir="$REPO"; args=(test -s fleet)
        else
            dir="$REPO/roles/$s"; args=(test -s default)
        fi
        [ -d "$dir/molecule" ] || die "no molecule scenario for $s"
        log "molecule ${args[*]} ($s)"
        if (cd "$dir" && $SUDO env "PATH=$PATH" CONTAINERS_CONF="$CONTAINERS_CONF" \
                SDAGENT_MOLECULE_IMAGE="$IMAGE" SDAGENT_WHEELHOUSE="$WHEELHOUSE" \
                SDAGENT_CA_BUNDLE="$SDAGENT_CA_BUNDLE" NO_COLOR=1 PY_COLORS=0 ANSIBLE_FORCE_COLOR=0 \
                ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks \
                molecule "${args[@]}"); then
            log "molecule $s passed in $(($(date +%s) - t0))s"
        else
            log "molecule $s FAILED after $(($(date +%s) - t0))s"
            failed+=("$s")
        fi
    done
fi

if [ "${#failed[@]}" -gt 0 ]; then
    die "molecule scenarios failed: ${failed[*]}"
fi
log "all done in $(($(date +%s) - START))s"
