"""OpenMP runtimes in one process: which are mapped, when two collide, and what to tell the operator.

Why: an application that ships its own Intel or LLVM OpenMP runtime (a wheel
with a bundled `libiomp5`, `libomp`, or an auditwheel-renamed copy) aborts
under a plan that preloads another libiomp5: the second copy finds the first
already initialized, prints "OMP: Error #15" and calls abort() (exit 134).
`KMP_DUPLICATE_LIB_OK=TRUE` silences it and crashes at exit instead, so the
agent never sets it. The remedy is one runtime: the plan's `omp_runtime` set to
the application's own (`iomp_path` = its file), or torch's own (`default`).

Runtimes are grouped into families: Intel's libiomp5 and LLVM's libomp are one
code base and detect each other (two of them = Error #15); GNU's libgomp is
another (torch's wheel needs it; a preloaded libiomp5 interposes its GOMP_*
entry points, so libgomp mapped beside the plan's libiomp5 is expected).
Two files of one family is the fault.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

#: family -> file-name pattern (versioned and auditwheel-renamed names too; not libomptarget, LLVM's offload).
FAMILIES: dict[str, re.Pattern[str]] = {
    "intel/llvm": re.compile(r"^lib(iomp5|omp)([-_][0-9a-f]{6,})?\.so(\.[0-9.]+)?$"),
    "gnu": re.compile(r"^libgomp([-_][0-9a-f]{6,})?\.so(\.[0-9.]+)?$"),
}

REMEDY = ("keep one runtime: set the plan's omp_runtime to the application's own "
          "(`--set omp_runtime=intel --set iomp_path=<its file>`), or torch's own (`--set omp_runtime=default`); "
          "never KMP_DUPLICATE_LIB_OK=TRUE (it crashes at exit)")


def family(path: str) -> str | None:
    """The OpenMP runtime family of a shared object's path, or None when it is none."""
    name = Path(path).name
    return next((f for f, pat in FAMILIES.items() if pat.match(name)), None)


@dataclass(frozen=True)
class Duplicate:
    """Two or more files of one runtime family mapped into one process."""

    family: str
    files: tuple[str, ...]  # real paths, first-mapped first

    def describe(self) -> str:
        return f"{len(self.files)} {self.family} OpenMP runtimes in one process: {' and '.join(self.files)}"


def duplicate_runtimes(mapped: Iterable[str]) -> list[Duplicate]:
    """The families with more than one distinct file (by real path) among `mapped` (pure but for realpath)."""
    seen: dict[str, dict[str, None]] = {}
    for p in mapped:
        fam = family(p)
        if fam:
            seen.setdefault(fam, {})[os.path.realpath(p)] = None
    return [Duplicate(f, tuple(files)) for f, files in seen.items() if len(files) > 1]


# ---------------------------------------------------------------------------
# exec's error path: a command that aborted under a plan preloading an OpenMP runtime
# ---------------------------------------------------------------------------


def preloaded_runtime(env: Mapping[str, str]) -> str | None:
    """The Intel/LLVM OpenMP runtime the environment preloads (LD_PRELOAD), or None."""
    return next((p for p in env.get("LD_PRELOAD", "").replace(" ", ":").split(":")
                 if p and family(p) == "intel/llvm"), None)


def search_roots(command: Sequence[str], path_env: str | None) -> list[Path]:
    """Where the command's own libraries live: its program's prefix (`<prefix>/bin/prog` -> `<prefix>/lib`,
    which holds a venv's or conda env's site-packages) and the directory of a script it runs."""
    roots: list[Path] = []
    prog = shutil.which(command[0], path=path_env) if command else None
    if prog:
        roots.append(Path(prog).resolve().parent.parent / "lib")
        if os.path.realpath(prog) != prog:
            roots.append(Path(prog).parent.parent / "lib")  # a venv's python links to the base interpreter
    for arg in command[1:2]:
        if arg.endswith(".py") and Path(arg).is_file():
            roots.append(Path(arg).resolve().parent)
    return list(dict.fromkeys(r for r in roots if r.is_dir()))


def find_runtime_files(roots: Iterable[Path], budget_s: float = 5.0, max_entries: int = 300_000) -> list[str]:
    """Intel/LLVM OpenMP runtime files under `roots` (real paths), bounded in time and entries (a venv of
    ~100k files takes about a second: only on the error path)."""
    found: dict[str, None] = {}
    t0, n = time.monotonic(), 0
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                if FAMILIES["intel/llvm"].match(f):
                    found[os.path.realpath(os.path.join(dirpath, f))] = None
            n += len(files) + 1
            if n > max_entries or time.monotonic() - t0 > budget_s:
                return list(found)
    return list(found)


def aborted(status: int) -> bool:
    """Whether a child's status (subprocess returncode) is an abort: SIGABRT, or a shell's 134."""
    return status in (-signal.SIGABRT, 128 + signal.SIGABRT)


def abort_diagnosis(command: Sequence[str], planned: str, others: Sequence[str]) -> str:
    """One line for a command that aborted while the plan preloads the Intel/LLVM runtime `planned`."""
    mine = os.path.realpath(planned)
    others = [o for o in others if o != mine]
    where = (f"and the application ships {', '.join(others[:3])}" if others else
             "and the application loads its own (none found beside the command)")
    return (f"{command[0]} aborted (SIGABRT); if its output says 'OMP: Error #15', two OpenMP runtimes met in one "
            f"process: the plan preloads {mine} {where}: {REMEDY}")
