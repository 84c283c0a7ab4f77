"""What this process really runs with: mapped libraries, threads, affinity, load, versions.

Why inside the process: an env file or a launcher line says what was *meant*;
only /proc/self/maps, sched_getaffinity and torch's own thread count say what a
process *got* (a preload that failed, a serving framework that re-pinned it).
Parsing is pure (text in, records out); reading /proc happens in the small
`read_*` functions at the edge so tests can hand in fake text.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from sdagent.host.software import package_versions
from sdagent.envvars import tuning_vars

#: Libraries whose presence decides speed; everything else mapped is only counted.
NOTABLE_LIBRARIES: tuple[str, ...] = (
    "libjemalloc", "libtcmalloc", "libiomp5", "libgomp", "libomp", "libmkl", "libdnnl",
    "libintel-ext-pt", "libtorch_cpu",
)



# ---------------------------------------------------------------------------
# Pure parsers
# ---------------------------------------------------------------------------


def parse_maps(text: str) -> tuple[str, ...]:
    """Paths of the shared objects in a /proc/<pid>/maps text, first-mapped order, no duplicates."""
    seen: dict[str, None] = {}
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6:
            continue
        path = parts[5].strip()
        if path.endswith(" (deleted)"):
            path = path[: -len(" (deleted)")]
        if path.startswith("/") and ".so" in Path(path).name:
            seen.setdefault(path, None)
    return tuple(seen)


def parse_status_threads(text: str) -> int | None:
    """The `Threads:` count of a /proc/<pid>/status text."""
    for line in text.splitlines():
        key, _, val = line.partition(":")
        if key == "Threads":
            try:
                return int(val.strip())
            except ValueError:
                return None
    return None


def parse_cpu_model(cpuinfo: str) -> str:
    """The first `model name` of a /proc/cpuinfo text ('unknown' when absent)."""
    for line in cpuinfo.splitlines():
        key, _, val = line.partition(":")
        if key.strip() == "model name" and val.strip():
            return val.strip()
    return "unknown"


def notable(paths: Iterable[str]) -> tuple[str, ...]:
    """The mapped libraries that matter for speed (allocators, OpenMP, oneDNN/MKL, IPEX)."""
    return tuple(p for p in paths if Path(p).name.startswith(NOTABLE_LIBRARIES))


def is_mapped(path: str, mapped: Iterable[str]) -> bool:
    """Whether the library at `path` is among `mapped`, comparing resolved real paths."""
    want = os.path.realpath(path)
    return any(os.path.realpath(m) == want for m in mapped)


# ---------------------------------------------------------------------------
# Readers (the I/O edge)
# ---------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def read_mapped_libraries(pid: str = "self") -> tuple[str, ...]:
    return parse_maps(_read(f"/proc/{pid}/maps"))


def read_thread_count(pid: str = "self") -> int | None:
    return parse_status_threads(_read(f"/proc/{pid}/status"))


def read_affinity() -> tuple[int, ...]:
    """The calling thread's CPUs. Intel OpenMP with KMP_AFFINITY pins the main thread to ONE CPU
    at its first parallel region, so this alone under-reports a pinned process: see below."""
    return tuple(sorted(os.sched_getaffinity(0)))


def read_process_affinity() -> tuple[int, ...]:
    """The union of every thread's CPUs: what the process as a whole may run on.

    Before the OpenMP runtime starts it equals the launcher's mask (numactl,
    taskset); after, with KMP_AFFINITY pinning one thread per CPU, the union
    is still the instance's CPUs while the main thread alone shows one.
    """
    cpus: set[int] = set()
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = []
    for tid in tids:
        try:
            cpus |= os.sched_getaffinity(tid)
        except OSError:  # the thread ended meanwhile
            continue
    return tuple(sorted(cpus)) if cpus else read_affinity()


#: The child verify starts: a bare interpreter printing the CPUs it may run on (what a server's
#: subprocess or multiprocessing worker inherits from the thread that starts it).
CHILD_AFFINITY_CODE = "import os; print(' '.join(map(str, sorted(os.sched_getaffinity(0)))))"


def read_child_affinity(timeout_s: float = 60.0) -> tuple[int, ...]:
    """The CPUs a child process started from this (main) thread may run on; () when none could start.

    Intel OpenMP with KMP_AFFINITY binds the main thread to one CPU at its first parallel region,
    and every process started afterwards inherits that one CPU: a served application's workers
    all share CPU 0. Call it after warm_openmp().
    """
    import subprocess

    try:
        r = subprocess.run([sys.executable, "-S", "-c", CHILD_AFFINITY_CODE], capture_output=True, text=True,
                           timeout=timeout_s)
        return tuple(int(x) for x in r.stdout.split()) if r.returncode == 0 else ()
    except (OSError, ValueError, subprocess.SubprocessError):
        return ()


def warm_openmp() -> bool:
    """Run one parallel region in torch (as a server's first request does), so that an OpenMP runtime
    that pins threads has pinned them; False when torch is not loaded or not importable."""
    try:
        import torch
    except Exception:  # noqa: BLE001 - torch absent or broken: nothing to warm
        return False
    torch.ones(1 << 18).add_(1.0)  # above at::internal::GRAIN_SIZE (32768): a parallel region when threads > 1
    return True


def read_load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3  # type: ignore[return-value]


def read_cpu_model() -> str:
    return parse_cpu_model(_read("/proc/cpuinfo"))


def read_governor() -> str | None:
    """cpu0's frequency governor, where the kernel exposes one (VMs often do not)."""
    text = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").strip()
    return text or None


def torch_threads() -> tuple[int | None, int | None]:
    """(intra-op, inter-op) threads of torch, importing it only when already loaded or cheap."""
    try:
        import torch
    except Exception:  # torch absent or broken: the state says so, the caller decides
        return None, None
    return torch.get_num_threads(), torch.get_num_interop_threads()


def process_start_time() -> float | None:
    """When this process started (wall clock): the zero of "start to first image"."""
    try:
        import psutil

        return float(psutil.Process().create_time())
    except Exception:  # noqa: BLE001 - a missing figure, not a failure
        return None


def read_memory_available_kb() -> int | None:
    """Memory the kernel could give a new process now (psutil: MemAvailable, cgroup-unaware)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available // 1024)
    except Exception:  # noqa: BLE001 - a missing figure, not a failure
        return None


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessState:
    """The facts verify's tuning checks compare with the plan (fakeable in tests)."""

    mapped: tuple[str, ...]  # shared objects mapped into the process
    torch_threads: int | None
    affinity: tuple[int, ...]
    env: dict[str, str] = field(default_factory=dict)
    #: CPUs a child started from the main thread after torch's first parallel region inherits;
    #: None: not read (a fake state), (): no child could start
    child_affinity: tuple[int, ...] | None = None


def process_state() -> ProcessState:
    """Read the affinity before any OpenMP parallel region (the union over threads), then torch's
    threads; then run one parallel region and start a child, to see what a server's children inherit."""
    affinity = read_process_affinity()
    intra, _ = torch_threads()
    warm_openmp()
    return ProcessState(
        mapped=read_mapped_libraries(),  # after torch's first op: every OpenMP runtime it loads is mapped
        torch_threads=intra,
        affinity=affinity,
        env=tuning_vars(os.environ),
        child_affinity=read_child_affinity(),
    )


@dataclass(frozen=True)
class MachineState:
    """Everything recorded beside a figure so that a reader can judge it later."""

    timestamp: float
    hostname: str
    cpu_model: str
    logical_cpus: int | None
    affinity: tuple[int, ...]  # union over the process's threads
    main_thread_affinity: tuple[int, ...]  # one CPU when KMP_AFFINITY pinned it
    load_average: tuple[float, float, float]
    governor: str | None
    process_threads: int | None
    torch_threads: int | None
    torch_interop_threads: int | None
    libraries: tuple[str, ...]  # notable mapped libraries (full paths)
    mapped_count: int
    env: dict[str, str]
    memory_available_kb: int | None
    versions: dict[str, str | None]
    python: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["affinity"] = list(self.affinity)
        d["main_thread_affinity"] = list(self.main_thread_affinity)
        d["load_average"] = list(self.load_average)
        d["libraries"] = list(self.libraries)
        return d


def machine_state() -> MachineState:
    """Snapshot of this process and host now (a record that holds it attaches the plan in effect)."""
    mapped = read_mapped_libraries()
    intra, inter = torch_threads()
    return MachineState(
        timestamp=time.time(),
        hostname=socket.gethostname(),
        cpu_model=read_cpu_model(),
        logical_cpus=os.cpu_count(),
        affinity=read_process_affinity(),
        main_thread_affinity=read_affinity(),
        load_average=tuple(read_load_average()),  # type: ignore[arg-type]
        governor=read_governor(),
        process_threads=read_thread_count(),
        torch_threads=intra,
        torch_interop_threads=inter,
        libraries=notable(mapped),
        mapped_count=len(mapped),
        env=tuning_vars(os.environ),
        memory_available_kb=read_memory_available_kb(),
        versions=package_versions(),
        python=sys.executable,
    )
