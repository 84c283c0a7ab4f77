"""Can the host's C++ compiler build inductor's code? A small test build with inductor's own flags.

Why a build and not `which g++`: a compiler that exists is not one that can
build what inductor emits. GCC 8/9 (RHEL 8, Debian 10) reject `-std=c++20`,
GCC 10 rejects `-mamx-tile`, a toolchain without libgomp's headers rejects
`-fopenmp`; `sdagent model compile` then died mid-export after minutes. The
test program is tiny (an OpenMP loop, a C++20 concept), built as a shared
object with the flags torch's inductor passes (torch/_inductor/cpp_builder.py
and cpu_vec_isa.py, torch 2.13), so it takes well under a second; its answer
is cached per compiler path, version and mtime (host.probecache).

Nothing here imports torch: the C++ standard inductor asks for is read from the
installed torch's cpp_builder.py source, so `sdagent plan` stays fast.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable

from sdagent.host.probecache import cached

#: The flags inductor's CppBuilder passes on Linux with gcc (torch 2.13, cpp_builder.py:
#: _get_optimization_cflags, _get_ffast_math_flags, _get_shared_cflag, _get_os_related_cpp_cflags,
#: _get_openmp_args), minus include and link paths (the test needs none of torch's headers) and the
#: gcc-only `-pedantic`/`-fexcess-precision=fast` (the same test serves clang++).
INDUCTOR_FLAGS: tuple[str, ...] = (
    "-O3", "-DNDEBUG", "-fno-omit-frame-pointer", "-fno-trapping-math", "-funsafe-math-optimizations",
    "-ffinite-math-only", "-fno-signed-zeros", "-fno-finite-math-only", "-fno-unsafe-math-optimizations",
    "-fmath-errno", "-ffp-contract=off", "-fno-tree-loop-vectorize", "-march=native", "-shared", "-fPIC",
    "-Wall", "-Wno-unused-variable", "-Wno-unknown-pragmas", "-fopenmp",
)

#: What inductor's vector ISA adds, by the CPU flags that select it (cpu_vec_isa.py: VecAMX, VecAVX512,
#: VecAVX2), most capable first; each entry: (required /proc/cpuinfo flags, compiler flags).
ISA_FLAGS: tuple[tuple[frozenset[str], tuple[str, ...]], ...] = (
    (frozenset({"amx_tile", "amx_bf16", "amx_int8", "avx512f", "avx512dq", "avx512vl", "avx512bw",
                "avx512_vnni"}),
     ("-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx512bw", "-mfma", "-mavx512vnni", "-mamx-tile",
      "-mamx-bf16", "-mamx-int8")),
    (frozenset({"avx512f", "avx512dq", "avx512vl", "avx512bw"}),
     ("-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx512bw", "-mfma")),
    (frozenset({"avx2", "fma", "f16c"}), ("-mavx2", "-mfma", "-mf16c")),
)

#: The test program: an OpenMP loop (inductor's kernels are OpenMP loops), a C++20 concept
#: (inductor's default standard since torch 2.10) and an exported C function (its wrapper's ABI).
PROBE_SOURCE = r"""
#include <cmath>
#include <cstdint>
#include <omp.h>
#if __cplusplus >= 202002L
#include <concepts>
template <std::floating_point T> T sdagent_twice(T x) { return x + x; }
#else
template <typename T> T sdagent_twice(T x) { return x + x; }
#endif
extern "C" int sdagent_cxx_probe(float* out, int64_t n) {
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) out[i] = sdagent_twice(std::sqrt(static_cast<float>(i)));
  return omp_get_max_threads();
}
"""

#: A probe build longer than this is taken as "could not tell" (a host busy compiling), not cached.
PROBE_TIMEOUT_S = 120.0


def inductor_std_flag(cpp_builder: Path | None = None) -> str:
    """`-std=c++NN` as the installed torch's inductor passes it (the default of _get_cpp_std_cflag).

    Read from torch/_inductor/cpp_builder.py's text without importing torch; `-std=c++17` (torch
    before 2.10) when torch or the pattern is not found.
    """
    path = cpp_builder
    if path is None:
        try:
            spec = importlib.util.find_spec("torch")
        except (ImportError, ValueError):
            spec = None
        locs = list(spec.submodule_search_locations or []) if spec else []
        path = Path(locs[0]) / "_inductor" / "cpp_builder.py" if locs else None
    try:
        text = path.read_text() if path else ""
    except OSError:
        text = ""
    m = re.search(r'def _get_cpp_std_cflag\(std_num: str = "(c\+\+\d+)"\)', text)
    return f"-std={m.group(1) if m else 'c++17'}"


def isa_flags(cpu_flags: Iterable[str]) -> tuple[str, ...]:
    """The vector-ISA flags inductor would add on a CPU with these /proc/cpuinfo flags (pure)."""
    have = set(cpu_flags)
    for need, flags in ISA_FLAGS:
        if need <= have:
            extra = ("-mavx512bf16",) if "avx512_bf16" in have and "-mavx512f" in flags else ()
            return flags + extra
    return ()


def read_cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, ...]:
    """The `flags` of this CPU (the real one: the compiler builds for the host it runs on)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return ()
    for line in text.splitlines():
        key, _, val = line.partition(":")
        if key.strip() == "flags":
            return tuple(val.split())
    return ()


def probe_command(cxx: str, source: str, output: str, std: str, isa: tuple[str, ...]) -> list[str]:
    """The test build's command line: inductor's flags, standard and ISA flags (pure)."""
    return [cxx, source, *INDUCTOR_FLAGS, std, *isa, "-o", output]


def first_error_line(text: str, limit: int = 240) -> str:
    """The first line of a compiler's output that says `error` (else the first non-blank line), one line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = next((ln for ln in lines if re.search(r"\berror\b", ln, re.I)), lines[0] if lines else "")
    return line[:limit]


def compiler_version(cxx: str) -> str:
    """The first line of `cxx --version` ('' when it does not answer)."""
    try:
        r = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return (r.stdout.strip().splitlines() or [""])[0]


def _build(cxx: str, std: str, isa: tuple[str, ...]) -> dict:
    """Run the test build once; {"ok", "error", "command"} (+ "cache": False when it timed out)."""
    with tempfile.TemporaryDirectory(prefix="sdagent-cxx-") as tmp:
        src, out = os.path.join(tmp, "sdagent_cxx_probe.cpp"), os.path.join(tmp, "probe.so")
        Path(src).write_text(PROBE_SOURCE)
        cmd = probe_command(cxx, src, out, std, isa)
        shown = " ".join(os.path.basename(c) if c in (src, out) else c for c in cmd)
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, cwd=tmp)
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"the test build took over {PROBE_TIMEOUT_S:g} s", "command": shown,
                    "cache": False}
        except OSError as exc:
            return {"ok": False, "error": f"cannot run it ({exc.strerror})", "command": shown}
        if r.returncode == 0 and os.path.isfile(out):
            return {"ok": True, "error": None, "command": shown}
        why = first_error_line(r.stderr + "\n" + r.stdout) or (
            f"exit status {r.returncode}" + (", no output" if r.returncode else " but no shared object written"))
        return {"ok": False, "error": why, "command": shown}


def cxx_problem(cxx: str | None, *, cpu_flags: Iterable[str] | None = None, std: str | None = None) -> str | None:
    """Why `cxx` cannot build inductor's code (its test build's first error line), or None when it can.

    None too when there is no compiler (the planner says so itself). Cached per compiler path,
    realpath, mtime and `--version`, standard and ISA flags (host.probecache).
    """
    if not cxx:
        return None
    real = os.path.realpath(cxx)
    try:
        mtime = os.stat(real).st_mtime_ns
    except OSError as exc:
        return f"{cxx}: {exc.strerror}"
    std = std or inductor_std_flag()
    isa = isa_flags(read_cpu_flags() if cpu_flags is None else cpu_flags)
    key = {"cxx": cxx, "realpath": real, "mtime_ns": mtime, "version": compiler_version(cxx), "std": std,
           "isa": list(isa), "flags": list(INDUCTOR_FLAGS), "source": PROBE_SOURCE}
    answer = cached("cxx", key, lambda: _build(cxx, std, isa))
    return None if answer.get("ok") else f"{cxx} cannot build inductor's code ({std}): {answer.get('error')}"
