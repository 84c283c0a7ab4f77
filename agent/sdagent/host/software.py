"""Facts about the host's software that the plan needs: libraries, launchers, IPEX, versions.

This is the I/O edge of planning: it looks at the filesystem and package
metadata, and hands :func:`sdagent.planning.plan.make_plan` a plain record.
Nothing here imports torch, so `sdagent plan` stays fast.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from sdagent.host.cxx import cxx_problem

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


#: Preloadable paths: absolute, no whitespace, quotes, ':' (LD_PRELOAD's separator) or '%'.
_PATH_RE = re.compile(r"/[A-Za-z0-9_./+\-]+")


def unsafe_library(path: str, euid: int | None = None) -> str | None:
    """Why `path` must not be preloaded, or None when it may.

    A preloaded library runs inside every tuned process (root's too, when root
    runs the wrapper): it must be a regular file that neither group nor others
    can write, owned by root or by the user running the agent.
    """
    if not _PATH_RE.fullmatch(path):
        return "not an absolute path of plain characters (no spaces, quotes, ':' or '%')"
    try:
        st = os.stat(path)
    except OSError:
        return "no such file"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    me = os.geteuid() if euid is None else euid
    if st.st_uid not in (0, me):
        return f"owned by uid {st.st_uid}, neither root nor this user"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "writable by group or others"
    return None


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
    """Absolute path of the library of this kind, or None when the host lacks a safe one.

    A candidate that another user could replace (see planning.settings.unsafe_library)
    is passed over: it would run inside every tuned process.
    """
    names = LIBRARY_NAMES[kind]
    candidates = [d / n for d in (dirs if dirs is not None else library_search_dirs()) for n in names]
    if dirs is None:
        ld = _ldconfig_paths()
        candidates += [Path(ld[n]) for n in names if n in ld]
    for p in candidates:
        if p.is_file() and unsafe_library(str(p)) is None:
            return str(p)
    return None


def memory_node(root: str = "/") -> int:
    """The first NUMA node with memory (/sys/devices/system/node/has_memory), 0 where unknown.

    Why: numactl refuses --membind for a memoryless node ("<N> is invalid"), so a probe on node 0
    of a host whose node 0 has no memory (NPS4, CXL, HBM-less layouts) would report that binding is
    refused everywhere.
    """
    try:
        text = (Path(root) / "sys/devices/system/node/has_memory").read_text().strip()
    except OSError:
        return 0
    first = text.split(",")[0].split("-")[0]
    return int(first) if first.isdigit() else 0


@functools.lru_cache(maxsize=None)
def numa_binding_permitted(numactl: str, node: int = 0) -> bool:
    """Whether `numactl -m NODE` works here (containers often refuse set_mempolicy); NODE must have
    memory (memory_node)."""
    try:
        r = subprocess.run(
            [numactl, f"--membind={node}", "true"],
            capture_output=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


@dataclass(frozen=True)
class IpexStatus:
    """Whether IPEX can be used with the installed torch: its metadata, then an import in a subprocess."""

    usable: bool
    version: str | None
    torch_version: str | None
    reason: str


#: Distributions whose versions go beside every figure.
STACK: tuple[str, ...] = ("torch", "intel-extension-for-pytorch", "diffusers", "transformers", "numpy",
                          "intel-openmp", "openvino")


def package_version(name: str) -> str | None:
    """The installed version of a distribution, or None (from metadata: no import)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def package_versions(names: tuple[str, ...] = STACK) -> dict[str, str | None]:
    """Python's and the ML stack's versions, recorded beside figures."""
    return {"python": platform.python_version(), **{n: package_version(n) for n in names}}


def ipex_status() -> IpexStatus:
    """Whether IPEX is usable here: installed, built for the installed torch, and importable.

    Metadata first (cheap); when it matches, importing it in a subprocess decides (an undefined
    symbol or a broken install passes the metadata test and fails the import). The import's answer
    is cached per install (host.probecache), so only the first command after an install pays ~8 s.
    """
    torch_v = package_version("torch")
    ipex_v = package_version("intel-extension-for-pytorch") or package_version("intel_extension_for_pytorch")
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
    failed = ipex_import_error(ipex_v, torch_v)
    if failed:
        return IpexStatus(False, ipex_v, torch_v, f"IPEX {ipex_v} matches torch {torch_v} but does not import: "
                          f"{failed}")
    return IpexStatus(True, ipex_v, torch_v, f"IPEX {ipex_v} matches torch {torch_v} and imports")


#: The module whose import decides IPEX's usability.
IPEX_MODULE = "intel_extension_for_pytorch"

#: An import longer than this is "could not tell" (not cached): IPEX imports torch, ~8 s on a quiet host.
IPEX_IMPORT_TIMEOUT_S = 300.0


def _module_file(name: str) -> str | None:
    """Where `name` would be imported from, without importing it (its package's __init__ or module file)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec and spec.origin else None


def _import_in_subprocess(module: str, timeout_s: float) -> dict:
    """Import `module` in a fresh interpreter with this process's sys.path: {"ok", "error"}."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    try:
        r = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True,
                           timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"importing {module} took over {timeout_s:g} s", "cache": False}
    except OSError as exc:
        return {"ok": False, "error": f"cannot start {sys.executable} ({exc.strerror})", "cache": False}
    if r.returncode == 0:
        return {"ok": True, "error": None}
    lines = [ln.strip() for ln in r.stderr.splitlines() if ln.strip()]
    last = next((ln for ln in reversed(lines) if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", ln)),
                lines[-1] if lines else f"exit status {r.returncode}")
    return {"ok": False, "error": last[:300]}


def ipex_import_error(ipex_v: str, torch_v: str, timeout_s: float = IPEX_IMPORT_TIMEOUT_S) -> str | None:
    """Why importing IPEX fails in a fresh interpreter (its exception's line), or None when it imports.

    Cached per install: the package's path, its mtime, IPEX's and torch's versions and the interpreter.
    """
    from sdagent.host.probecache import cached

    origin = _module_file(IPEX_MODULE)
    if origin is None:
        return f"{IPEX_MODULE} is not on the import path (its metadata is)"
    try:
        mtime = os.stat(origin).st_mtime_ns
    except OSError as exc:
        return f"{origin}: {exc.strerror}"
    key = {"path": origin, "mtime_ns": mtime, "version": ipex_v, "torch": torch_v, "python": sys.executable}
    answer = cached("ipex-import", key, lambda: _import_in_subprocess(IPEX_MODULE, timeout_s))
    return None if answer.get("ok") else str(answer.get("error"))


@dataclass(frozen=True)
class HostFacts:
    """Software facts of the host, gathered once and passed to the pure planner."""

    libraries: dict[str, str | None] = field(default_factory=dict)  # kind -> path or None
    numactl: str | None = None
    taskset: str | None = None
    numa_permitted: bool = False
    ipex: IpexStatus = IpexStatus(False, None, None, "not probed")
    cxx: str | None = None  # the C++ compiler inductor would build compiled packages with
    #: why the compiler found cannot build inductor's code (its test build's first error line), or None
    #: when it can (or none was found). The planner plans `compile false` with this reason when set.
    cxx_error: str | None = None

    def to_dict(self) -> dict:
        return {
            "libraries": dict(self.libraries),
            "numactl": self.numactl,
            "taskset": self.taskset,
            "numa_permitted": self.numa_permitted,
            "cxx": self.cxx,
            "cxx_error": self.cxx_error,
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
    cxx = find_cxx()
    return HostFacts(
        libraries=libs,
        numactl=numactl,
        taskset=shutil.which("taskset"),
        numa_permitted=numa_binding_permitted(numactl, memory_node()) if numactl else False,
        ipex=ipex_status(),
        cxx=cxx,
        cxx_error=cxx_problem(cxx),
    )


def find_cxx() -> str | None:
    """The C++ compiler inductor uses ($CXX, else g++, c++, clang++), or None."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None
