"""Facts about the host's software that the plan needs: libraries, launchers, IPEX.

This is the I/O edge of planning: it looks at the filesystem and package
metadata, and hands :func:`sdagent.plan.make_plan` a plain record.
Nothing here imports torch, so `sdagent plan` stays fast.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

#: File names tried per library, most specific first. Debian's libjemalloc2 ships
#: only the versioned name, which is why PyTorch's launcher misses it.
LIBRARY_NAMES: dict[str, tuple[str, ...]] = {
    "jemalloc": ("libjemalloc.so.2", "libjemalloc.so"),
    "tcmalloc": ("libtcmalloc.so.4", "libtcmalloc.so", "libtcmalloc_minimal.so.4"),
    "iomp": ("libiomp5.so",),
}


def library_search_dirs(prefixes: tuple[str, ...] | None = None) -> list[Path]:
    """Where preloadable libraries are looked for, in order.

    The agent's own venv first (the `intel-openmp` wheel puts libiomp5.so in
    <venv>/lib), then the distribution's multiarch and lib64 directories.
    """
    prefixes = prefixes or tuple(dict.fromkeys((sys.prefix, sys.base_prefix)))
    dirs = [Path(p) / "lib" for p in prefixes]
    dirs += [
        Path("/usr/lib/x86_64-linux-gnu"),
        Path("/usr/lib64"),
        Path("/usr/lib"),
        Path("/usr/local/lib"),
        Path("/opt/intel/oneapi/compiler/latest/lib"),
    ]
    return dirs


def _ldconfig_paths() -> dict[str, str]:
    exe = shutil.which("ldconfig") or ("/sbin/ldconfig" if Path("/sbin/ldconfig").exists() else None)
    if not exe:
        return {}
    try:
        out = subprocess.run([exe, "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    found: dict[str, str] = {}
    for line in out.splitlines():
        name, sep, path = line.strip().partition(" => ")
        if sep:
            found.setdefault(name.split()[0], path.strip())
    return found


def find_library(kind: str, dirs: list[Path] | None = None) -> str | None:
    """Absolute path of the library of this kind, or None when the host lacks it."""
    names = LIBRARY_NAMES[kind]
    for d in dirs if dirs is not None else library_search_dirs():
        for n in names:
            p = d / n
            if p.is_file():
                return str(p)
    if dirs is None:
        ld = _ldconfig_paths()
        for n in names:
            if n in ld and Path(ld[n]).is_file():
                return ld[n]
    return None


@functools.lru_cache(maxsize=None)
def numa_binding_permitted(numactl: str) -> bool:
    """Whether `numactl -m` works here: containers often refuse set_mempolicy."""
    try:
        r = subprocess.run(
            [numactl, "--cpunodebind=0", "--membind=0", "true"],
            capture_output=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


@dataclass(frozen=True)
class IpexStatus:
    """Whether IPEX can be used with the installed torch, judged from metadata only."""

    usable: bool
    version: str | None
    torch_version: str | None
    reason: str


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def ipex_status() -> IpexStatus:
    torch_v = _dist_version("torch")
    ipex_v = _dist_version("intel-extension-for-pytorch") or _dist_version("intel_extension_for_pytorch")
    if ipex_v is None:
        return IpexStatus(False, None, torch_v, "intel-extension-for-pytorch is not installed "
                          "(install the `ipex` extra: pip install 'sdagent[ipex]')")
    if torch_v is None:
        return IpexStatus(False, ipex_v, None, "torch is not installed")

    def mm(v: str) -> tuple[str, ...]:
        return tuple(v.split("+")[0].split(".")[:2])

    if mm(torch_v) != mm(ipex_v):
        return IpexStatus(False, ipex_v, torch_v,
                          f"IPEX {ipex_v} needs torch {'.'.join(mm(ipex_v))}.*, found torch {torch_v}")
    return IpexStatus(True, ipex_v, torch_v, f"IPEX {ipex_v} matches torch {torch_v}")


@dataclass(frozen=True)
class HostFacts:
    """Software facts of the host, gathered once and passed to the pure planner."""

    libraries: dict[str, str | None] = field(default_factory=dict)  # kind -> path or None
    numactl: str | None = None
    taskset: str | None = None
    numa_permitted: bool = False
    ipex: IpexStatus = IpexStatus(False, None, None, "not probed")

    def to_dict(self) -> dict:
        return {
            "libraries": dict(self.libraries),
            "numactl": self.numactl,
            "taskset": self.taskset,
            "numa_permitted": self.numa_permitted,
            "ipex": {
                "usable": self.ipex.usable,
                "version": self.ipex.version,
                "torch_version": self.ipex.torch_version,
                "reason": self.ipex.reason,
            },
        }


def gather_facts(library_paths: dict[str, str] | None = None) -> HostFacts:
    """Probe this host. `library_paths` (kind -> path) wins over the search."""
    libs: dict[str, str | None] = {}
    for kind in LIBRARY_NAMES:
        given = (library_paths or {}).get(kind)
        libs[kind] = given if given else find_library(kind)
    numactl = shutil.which("numactl")
    return HostFacts(
        libraries=libs,
        numactl=numactl,
        taskset=shutil.which("taskset"),
        numa_permitted=numa_binding_permitted(numactl) if numactl else False,
        ipex=ipex_status(),
    )
