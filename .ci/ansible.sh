#!/usr/bin/env bash
# Lint the Ansible content and run every Molecule scenario on Debian bookworm
# system containers (podman + runc, base image imported from a debootstrap
# rootfs; no registry and no Docker engine needed).
#
#   bash .ci/ansible.sh                 # lint + all scenarios
#   SDAGENT_CI_SCENARIOS="jemalloc fleet" bash .ci/ansible.sh   # a subset
#   SDAGENT_CI_SKIP_LINT=1 / SDAGENT_CI_SKIP_MOLECULE=1
#   SDAGENT_CI_PARALLEL="jemalloc intel_openmp numactl sdagent"   # scenarios run side by side ("" for none)
#   SDAGENT_CI_BESIDE="fleet"   # run beside the one-after-another scenarios ("" for none)
#
# Everything it downloads or builds is cached under
# ${SDAGENT_CI_CACHE:-$HOME/.cache/sdagent-ci}: the tool venv, the rootfs
# tarball and the wheelhouse the target hosts install from (offline, as a fleet
# without Internet access would). A warm run only re-runs lint and Molecule.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${SDAGENT_CI_CACHE:-$HOME/.cache/sdagent-ci}
SCENARIOS=${SDAGENT_CI_SCENARIOS:-"jemalloc intel_openmp numactl sdagent tuned_env fleet"}
SUITE=bookworm
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
# The podman connection, pipelined (.ci/ansible/connection_plugins/podman.py says why): one `podman
# exec` per task instead of six. Pipelining is what ansible.cfg turns on for a real fleet's SSH hosts.
export ANSIBLE_CONNECTION_PLUGINS="$REPO/.ci/ansible/connection_plugins" ANSIBLE_PIPELINING=True

# --- 3. base image: debootstrap rootfs -> podman import ------------------------
# The Debian mirror (for debootstrap and the rootfs's own apt sources) is this
# machine's: its apt sources (/etc/apt/sources.list, *.list, and the URIs: lines
# of deb822 *.sources) for the suites bookworm, bookworm-updates and
# bookworm-security. SDAGENT_CI_DEBIAN_MIRROR (and _SECURITY_MIRROR) name your
# mirror where this machine has none for bookworm. No package host is named here.
apt_sources() {  # "URI SUITE" for every enabled deb source of this machine
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
                           print $i, $(i + 1) }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk 'BEGIN { RS = ""; FS = "\n" }
             { types = ""; uris = ""; suites = ""; enabled = "yes"
               for (i = 1; i <= NF; i++) {
                   if ($i ~ /^[ \t]*#/ || index($i, ":") == 0) continue
                   key = tolower(substr($i, 1, index($i, ":") - 1)); val = substr($i, index($i, ":") + 1)
                   gsub(/^[ \t]+|[ \t]+$/, "", val)
                   if (key == "types") types = val; else if (key == "uris") uris = val
                   else if (key == "suites") suites = val; else if (key == "enabled") enabled = tolower(val)
               }
               if (enabled == "no" || (" " types " ") !~ / deb /) next
               nu = split(uris, u, /[ \t]+/); ns = split(suites, s, /[ \t]+/)
               for (a = 1; a <= nu; a++) for (b = 1; b <= ns; b++) print u[a], s[b] }' "$f"
    done
}
source_for() { apt_sources | awk -v s="$1" '$2 == s { print $1; exit }'; }
if [ -n "${SDAGENT_CI_DEBIAN_MIRROR:-}" ]; then
    MIRROR=$SDAGENT_CI_DEBIAN_MIRROR
    ROOTFS_SOURCES="deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main"
    SECURITY=${SDAGENT_CI_DEBIAN_SECURITY_MIRROR:-}
    [ -z "$SECURITY" ] || ROOTFS_SOURCES="$ROOTFS_SOURCES
deb $SECURITY $SUITE-security main"
else
    MIRROR=$(source_for "$SUITE")
    [ -n "$MIRROR" ] || die "this machine has no apt source for $SUITE: set SDAGENT_CI_DEBIAN_MIRROR to your Debian mirror"
    ROOTFS_SOURCES=$(for s in "$SUITE" "$SUITE-updates" "$SUITE-security"; do
        u=$(source_for "$s"); [ -z "$u" ] || echo "deb $u $s main"; done)
fi
log "Debian sources (from this machine's apt sources): $(echo "$ROOTFS_SOURCES" | paste -sd';')"

ROOTFS_VERSION=v3   # bump when the recipe below changes
ROOTFS="$CACHE/rootfs/$SUITE-minbase-$ROOTFS_VERSION-$(echo "$ROOTFS_SOURCES" | sha256sum | cut -c1-8).tar.gz"
if [ ! -s "$ROOTFS" ]; then
    log "debootstrap $SUITE rootfs (once; cached at $ROOTFS)"
    mkdir -p "$CACHE/rootfs"
    work=$(mktemp -d "$CACHE/rootfs/build.XXXXXX")
    $SUDO debootstrap --variant=minbase --include=python3,python3-apt "$SUITE" "$work/root" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
        || { tail -20 "$work/debootstrap.log"; die "debootstrap failed"; }
    r="$work/root"
    printf '%s\n' "$ROOTFS_SOURCES" >"$work/sources.list"
    $SUDO sh -c "rm -f '$r'/var/cache/apt/archives/*.deb '$r'/var/lib/apt/lists/*_* '$r'/etc/hostname
        cp '$work/sources.list' '$r'/etc/apt/sources.list
        # an old mtime makes apt's cache_valid_time refresh the (empty) lists
        touch -d 2000-01-01 '$r'/var/lib/apt/lists
        tar --numeric-owner -C '$r' -czf '$ROOTFS.tmp' .
        mv '$ROOTFS.tmp' '$ROOTFS'
        rm -rf --one-file-system '$work'"
fi
IMAGE="localhost/sdagent-$SUITE:$ROOTFS_VERSION-$(sha "$ROOTFS" | cut -c1-8)"
if ! $SUDO podman image exists "$IMAGE"; then
    log "podman import $IMAGE"
    $SUDO podman import --change 'CMD ["sleep","infinity"]' "$ROOTFS" "$IMAGE" >/dev/null
fi
export SDAGENT_MOLECULE_IMAGE="$IMAGE"

# --- 4. wheelhouse the target hosts install from (offline) ----------------------
# Exactly the files of requirements/native.lock and requirements/iomp.lock,
# checked against their hashes (the hosts install them with --require-hashes
# from this directory; the agent wheel itself is built by playbooks/build_wheel.yml
# on every run). Packages come from pip's own configuration (pip config list:
# index, find-links) plus SDAGENT_TORCH_INDEX, your CPU-only torch index, if set:
# the locks pin torch's +cpu build, which PyPI does not carry.
WHEELHOUSE="$CACHE/wheelhouse"
LOCKS=("$REPO/requirements/native.lock" "$REPO/requirements/iomp.lock")
mkdir -p "$WHEELHOUSE"
for l in "${LOCKS[@]}"; do [ -f "$l" ] || die "missing $l (bash scripts/lock-requirements.sh)"; done
WH_KEY=$(sha "${LOCKS[@]}")
if [ ! -f "$WHEELHOUSE/.locks-$WH_KEY" ]; then
    log "filling wheelhouse $WHEELHOUSE from ${LOCKS[*]##*/}"
    torch_index=()
    [ -z "${SDAGENT_TORCH_INDEX:-}" ] || torch_index=(--extra-index-url "$SDAGENT_TORCH_INDEX")
    pip_ download -q --require-hashes --only-binary=:all: --no-deps -d "$WHEELHOUSE" "${torch_index[@]}" \
        $(printf -- '-r %s ' "${LOCKS[@]}") \
        || die "could not download the locked wheels; is your CPU-only torch index (SDAGENT_TORCH_INDEX or pip config) reachable?"
    rm -f "$WHEELHOUSE"/.locks-* "$WHEELHOUSE"/.base-* "$WHEELHOUSE"/.deps-*
    touch "$WHEELHOUSE/.locks-$WH_KEY"
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
# The scenarios of the small roles (no agent wheel, no benchmark: mostly apt, pip and
# podman waits) and the sdagent role's run side by side, each into its own log printed
# when it ends, and the fleet scenario (its own wheel directory; the longest) starts
# beside them. tuned_env, the longest of the roles' chain, follows when they have ended:
# it and the sdagent scenario build the agent's wheel at one path, so they never overlap.
# Most of a scenario's time is Ansible's and podman's, not the benchmarks' (tiny model),
# and the benchmarks in them are judged on behaviour, never on speed.
PARALLEL=${SDAGENT_CI_PARALLEL-"jemalloc intel_openmp numactl sdagent"}
BESIDE=${SDAGENT_CI_BESIDE-"fleet"}
failed=()
molecule_one() {  # molecule_one SCENARIO: molecule test for a role's default scenario or fleet
    local s=$1 dir args
    if [ "$s" = fleet ]; then
        dir="$REPO"; args=(test -s fleet)
    else
        dir="$REPO/roles/$s"; args=(test -s default)
    fi
    [ -d "$dir/molecule" ] || { log "no molecule scenario for $s"; return 1; }
    (cd "$dir" && $SUDO env "PATH=$PATH" CONTAINERS_CONF="$CONTAINERS_CONF" \
        SDAGENT_MOLECULE_IMAGE="$IMAGE" SDAGENT_WHEELHOUSE="$WHEELHOUSE" \
        SDAGENT_CA_BUNDLE="$SDAGENT_CA_BUNDLE" NO_COLOR=1 PY_COLORS=0 ANSIBLE_FORCE_COLOR=0 \
        ANSIBLE_CONNECTION_PLUGINS="$ANSIBLE_CONNECTION_PLUGINS" ANSIBLE_PIPELINING="$ANSIBLE_PIPELINING" \
        ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks \
        molecule "${args[@]}")
}
if [ -z "${SDAGENT_CI_SKIP_MOLECULE:-}" ]; then
    LOGS=$(mktemp -d)
    declare -A pids=() started=()
    serial=() beside=()
    start_bg() {  # start_bg SCENARIO WHY: into its own log, printed by wait_bg
        log "molecule $1 ($2; its log follows when it ends)"
        started[$1]=$(date +%s)
        molecule_one "$1" >"$LOGS/$1.log" 2>&1 &
        pids[$1]=$!
    }
    wait_bg() {  # wait_bg SCENARIO...
        local s ok
        for s in "$@"; do
            if wait "${pids[$s]}"; then ok=passed; else ok=FAILED; failed+=("$s"); fi
            cat "$LOGS/$s.log"
            log "molecule $s $ok in $(($(date +%s) - started[$s]))s"
        done
    }
    small=()
    for s in $SCENARIOS; do
        if [[ " $PARALLEL " == *" $s "* ]]; then
            start_bg "$s" "side by side"; small+=("$s")
        elif [[ " $BESIDE " == *" $s "* ]]; then
            beside+=("$s")
        else
            serial+=("$s")
        fi
    done
    # the longest scenario (fleet) starts at once, beside the small ones: it is the critical path
    for s in "${beside[@]}"; do start_bg "$s" "beside the others"; done
    [ "${#small[@]}" -eq 0 ] || wait_bg "${small[@]}"
    for s in "${serial[@]}"; do
        t0=$(date +%s)
        log "molecule $s"
        if molecule_one "$s"; then
            log "molecule $s passed in $(($(date +%s) - t0))s"
        else
            log "molecule $s FAILED after $(($(date +%s) - t0))s"
            failed+=("$s")
        fi
    done
    [ "${#beside[@]}" -eq 0 ] || wait_bg "${beside[@]}"
    rm -rf "$LOGS"
fi

if [ "${#failed[@]}" -gt 0 ]; then
    die "molecule scenarios failed: ${failed[*]}"
fi
log "all done in $(($(date +%s) - START))s"
