"""The planner's rules: one named function per setting, its honour check beside it.

Each setting of :data:`sdagent.planning.settings.KNOBS` (except the library
paths, which are facts) has one :class:`Rule` in :data:`RULES`:

* ``rule(ctx) -> (value, reason)``: what the topology and the host facts call
  for, and why (the reason names the source of any figure it quotes);
* ``honour(ctx, value) -> (fallback, why) | None``: whether this host can honour
  a value (the rule's, a plan file's or an override's), and what it falls back to;
* optional ``normalize`` (a value's canonical form, with a note for the
  reason), ``check`` (refuses a value outright: :class:`BadInput`) and
  ``warn`` (a warning the plan carries when the value is legal but unwise).

Rules run in table order and may read the values decided before them
(``ctx.values``): the allocator before ``malloc_conf``, the OpenMP runtime before
``KMP_*``, the binding before ``membind``, the backend before ``compile``.
Pure: facts in, decisions out; the only state is the context the loop fills.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from sdagent.errors import BadInput
from sdagent.host.software import HostFacts
from sdagent.host.topology import Topology, native_bf16_flag
from sdagent.planning.layout import Instance, PlanRequest
from sdagent.planning.settings import KMP_AFFINITY_COMPACT, LIBRARY_KNOBS, MALLOC_CONF_PROFILES, UNSET

#: How to get each preloadable library (the hint a missing-library reason gives).
INSTALL_HINTS: dict[str, str] = {"jemalloc": "install libjemalloc2", "tcmalloc": "install libgoogle-perftools4",
                                 "iomp": "pip install intel-openmp into the agent's venv"}


@dataclass
class PlanContext:
    """What every rule may read: the facts, the layout, and the values decided so far.

    ``values`` maps setting -> value in effect (library paths first, then each
    decided setting in table order); ``missing`` collects the library kinds a
    rule or an honour check wanted and this host lacks (the plan's
    ``missing_libraries``).
    """

    topo: Topology
    facts: HostFacts
    request: PlanRequest
    instances: tuple[Instance, ...]
    values: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @property
    def first(self) -> Instance:
        """Instance 0: the latency instance, whose shape the per-instance settings follow."""
        return self.instances[0]

    def has_lib(self, kind: str) -> bool:
        """Whether a library of this kind (jemalloc | tcmalloc | iomp) is in effect (found or given)."""
        return bool(self.values.get(LIBRARY_KNOBS[kind]))

    @property
    def intel_omp(self) -> bool:
        return self.values.get("omp_runtime") == "intel"

    @property
    def pinned(self) -> bool:
        return self.values.get("binding", "none") != "none"


#: rule(ctx) -> (value, reason)
RuleFn = Callable[[PlanContext], "tuple[Any, str]"]
#: honour(ctx, value) -> (fallback value, why) when this host cannot honour `value`, else None
HonourFn = Callable[[PlanContext, Any], "tuple[Any, str] | None"]


@dataclass(frozen=True)
class Rule:
    """One setting's rule and the checks beside it (see the module docstring)."""

    key: str
    rule: RuleFn
    honour: HonourFn | None = None
    normalize: Callable[[Any], "tuple[Any, str]"] | None = None
    check: Callable[[PlanContext, Any], None] | None = None
    warn: Callable[[PlanContext, Any], "str | None"] | None = None


# --- libraries --------------------------------------------------------------------------------------

def _library_honour(fallback: str) -> HonourFn:
    """An honour check for a setting whose value names a library (allocator, omp_runtime)."""

    def honour(ctx: PlanContext, value: Any) -> tuple[Any, str] | None:
        kind = "iomp" if value == "intel" else value
        if kind not in LIBRARY_KNOBS or ctx.has_lib(kind):
            return None
        ctx.missing.append(kind)
        return fallback, (f"lib{kind} was not found on this host ({INSTALL_HINTS[kind]}, "
                          f"or --set {kind}_path=PATH)")
    return honour


def allocator_rule(ctx: PlanContext) -> tuple[str, str]:
    """jemalloc, else tcmalloc, else glibc malloc.

    Source: the published HF demo's first step (jemalloc + libiomp5 + pinning,
    32.3 s -> 11.8 s on a 32-core Sapphire Rapids).
    """
    if ctx.has_lib("jemalloc"):
        return "jemalloc", ("jemalloc found; the demo's first step (with libiomp5 and pinning: "
                            "32.3 s -> 11.8 s on a 32-core Sapphire Rapids)")
    ctx.missing.append("jemalloc")
    if ctx.has_lib("tcmalloc"):
        return "tcmalloc", "jemalloc not found (install libjemalloc2); tcmalloc found, the next best"
    return "default", "neither jemalloc nor tcmalloc found (install libjemalloc2): glibc malloc"


allocator_honour = _library_honour("default")


def malloc_conf_rule(ctx: PlanContext) -> tuple[str, str]:
    """The demo's MALLOC_CONF profile under jemalloc (settings.MALLOC_CONF_PROFILES names its source)."""
    if ctx.values["allocator"] == "jemalloc":
        return "demo", "the published demo's MALLOC_CONF (long-lived decay, background purging)"
    return UNSET, "only jemalloc reads MALLOC_CONF"


def malloc_conf_normalize(value: Any) -> tuple[Any, str]:
    """A profile name is expanded inside the decision: the decision shows the string in effect."""
    if value in MALLOC_CONF_PROFILES:
        return MALLOC_CONF_PROFILES[value], f" (profile '{value}')"
    return value, ""


def omp_runtime_rule(ctx: PlanContext) -> tuple[str, str]:
    """Intel OpenMP (libiomp5) when found: the demo's recipe; else torch's own libgomp."""
    if ctx.has_lib("iomp"):
        return "intel", "libiomp5 found: Intel OpenMP, as in the demo's recipe"
    ctx.missing.append("iomp")
    return "default", "libiomp5 not found (pip install intel-openmp into the agent's venv): torch's own OpenMP"


omp_runtime_honour = _library_honour("default")


# --- threads and binding ----------------------------------------------------------------------------

def omp_num_threads_rule(ctx: PlanContext) -> tuple[int, str]:
    """One OpenMP thread per CPU of the instance (the layout put one CPU per physical core unless use_smt)."""
    inst, topo, smt = ctx.first, ctx.topo, ctx.request.use_smt
    cores = len(inst.cpus) if not smt else len({topo.cpu(c).core for c in inst.cpus})
    cg = f" (cgroup quota {topo.cgroup.cpus:g} CPUs)" if topo.cgroup else ""
    return len(inst.cpus), (f"one thread per {'CPU' if smt else 'physical core'} of the instance: "
                            f"{cores} core(s){cg}; SMT siblings would share a core's FPUs")


def omp_num_threads_check(ctx: PlanContext, value: Any) -> None:
    """More threads than logical CPUs is never what anyone meant: refused, whatever asked for it."""
    if value > ctx.topo.logical_cpus:
        raise BadInput(f"invalid value {value} for plan setting 'omp_num_threads': "
                       f"this host has {ctx.topo.logical_cpus} logical CPUs")


def binding_rule(ctx: PlanContext) -> tuple[str, str]:
    """Pin (numactl, else taskset) when the instance uses a subset of the allowed CPUs; else nothing.

    Source of "pinning adds nothing on all CPUs": the ladder on the project's 2-core VM
    (pinned measured slower than stock).
    """
    insts, facts = ctx.instances, ctx.facts
    if len(insts) == 1 and set(ctx.first.cpus) == set(ctx.topo.allowed_cpus):
        return "none", ("the instance uses every CPU this process may use, so pinning adds nothing "
                        "(and pinning measured slower than stock on a 2-core VM)")
    why = ("instances share the host" if len(insts) > 1 else
           "the instance uses a subset of the allowed CPUs (one NUMA node, one thread per core)")
    if facts.numactl and facts.numa_permitted:
        return "numactl", f"{why}: pin with numactl"
    if facts.taskset:
        return "taskset", (f"{why}; numactl {'refuses memory binding here' if facts.numactl else 'not found'}"
                           ": pin with taskset")
    return "none", f"{why}, but neither numactl nor taskset is installed"


def binding_honour(ctx: PlanContext, value: Any) -> tuple[Any, str] | None:
    """numactl or taskset must be installed to pin with it (numactl falls back to taskset)."""
    facts = ctx.facts
    if value == "numactl" and not facts.numactl:
        return ("taskset" if facts.taskset else "none"), "numactl is not installed on this host"
    if value == "taskset" and not facts.taskset:
        return "none", "taskset is not installed on this host"
    return None


def membind_rule(ctx: PlanContext) -> tuple[bool, str]:
    """Bind memory to the instance's node on a multi-node host pinned with numactl."""
    multi_node = len(ctx.topo.nodes) > 1
    value = (ctx.values["binding"] == "numactl" and multi_node and ctx.facts.numa_permitted
             and ctx.first.node is not None)
    return value, ("memory bound to the instance's node (several NUMA nodes, binding permitted)"
                   if multi_node else "one NUMA node: nothing to bind memory to (the demo bound none)")


def membind_honour(ctx: PlanContext, value: Any) -> tuple[Any, str] | None:
    """Containers often refuse set_mempolicy (facts.numa_permitted probes it)."""
    if value and not ctx.facts.numa_permitted:
        return False, "this host refuses NUMA memory binding (set_mempolicy)"
    return None


def kmp_affinity_rule(ctx: PlanContext) -> tuple[str, str]:
    """Compact pinning of Intel OpenMP's threads when the instance is pinned (PyTorch's launcher's value)."""
    if ctx.intel_omp and ctx.pinned:
        return KMP_AFFINITY_COMPACT, "threads pinned compactly to the instance's cores (PyTorch's launcher's value)"
    return UNSET, "not pinned: leave thread placement to the OS" if ctx.intel_omp else "only Intel OpenMP reads KMP_*"


def kmp_blocktime_rule(ctx: PlanContext) -> tuple[Any, str]:
    """KMP_BLOCKTIME=1 when instances share the host; else Intel OpenMP's default 200 ms spin.

    Source of "slower at 1 for one instance": tune on the project's 2-core VM.
    """
    if ctx.intel_omp and len(ctx.instances) > 1:
        return 1, "several instances share the host: idle threads must not spin on their neighbours' cores"
    if ctx.intel_omp:
        return UNSET, ("one latency instance: the default 200 ms spin keeps threads hot between ops "
                       "(BLOCKTIME=1 measured slower on a 2-core VM)")
    return UNSET, "only Intel OpenMP reads KMP_*"


# --- compute ----------------------------------------------------------------------------------------

def precision_rule(ctx: PlanContext) -> tuple[str, str]:
    """bf16 where the CPU runs it natively (AMX-BF16 / AVX512-BF16); the demo's 11.8 s -> 5.4 s step."""
    flag = native_bf16_flag(ctx.topo.flags)
    if flag:
        return "bf16", f"the CPU has {flag}: bf16 runs natively (the demo's 11.8 s -> 5.4 s step)"
    return "fp32", "no AMX-BF16 or AVX512-BF16: bf16 would be emulated and slower than fp32"


def precision_warn(ctx: PlanContext, value: Any) -> str | None:
    if value == "bf16" and not native_bf16_flag(ctx.topo.flags):
        return "precision=bf16 on a CPU without AMX-BF16/AVX512-BF16: bf16 is emulated and slow here"
    return None


def backend_rule(ctx: PlanContext) -> tuple[str, str]:
    """IPEX when usable with this torch (host.software.ipex_status), else upstream PyTorch."""
    ipex = ctx.facts.ipex
    if ipex.usable:
        return "ipex", ipex.reason
    return "native", f"{ipex.reason}: upstream PyTorch (channels_last, autocast, torch.compile)"


def backend_honour(ctx: PlanContext, value: Any) -> tuple[Any, str] | None:
    ipex = ctx.facts.ipex
    if value == "ipex" and not ipex.usable:
        return "native", f"IPEX is not usable here ({ipex.reason})"
    return None


def channels_last_rule(ctx: PlanContext) -> tuple[bool, str]:
    """channels_last always: oneDNN's convolutions prefer NHWC (the demo's recipe)."""
    return True, "channels_last suits oneDNN's convolution kernels (the demo's recipe)"


def compile_rule(ctx: PlanContext) -> tuple[bool, str]:
    """AOTInductor packages where bf16 is native and a compiler can build; else eager.

    Source of 1.43x: the whole-image ladder on a 2-core AVX512-BF16 VM (docs/results/zen5-2c/ladder),
    compiled against eager bf16.
    """
    facts = ctx.facts
    if ctx.values["backend"] != "native":
        return False, "IPEX optimizes the graph itself"
    if not facts.cxx:
        return False, "no C++ compiler (g++) to build compiled packages: eager"
    if facts.cxx_error:
        return False, f"compile unavailable: {facts.cxx_error}"
    flag = native_bf16_flag(ctx.topo.flags)
    if ctx.values["precision"] == "bf16" and flag:
        return True, (f"bf16 runs natively ({flag}) and {facts.cxx} can build: the UNet, VAE decoder "
                      "and text encoder run as AOTInductor packages, built once and loaded in seconds "
                      "(the compiled image ran at 1.43x eager bf16's speed on a 2-core AVX512-BF16 VM: "
                      "docs/results/zen5-2c/ladder)")
    return False, "fp32 here: compiled only where `sdagent tune` measures it faster"


def compile_honour(ctx: PlanContext, value: Any) -> tuple[Any, str] | None:
    """Compiled packages need a C++ compiler that can build inductor's code (facts.cxx_error says why not)."""
    if not value or ctx.values["backend"] != "native":
        return None
    if not ctx.facts.cxx:
        return False, "no C++ compiler (g++) to build compiled packages"
    if ctx.facts.cxx_error:
        return False, f"compile unavailable: {ctx.facts.cxx_error}"
    return None


def compile_autotune_rule(ctx: PlanContext) -> tuple[bool, str]:
    return False, "max-autotune makes builds much longer; `sdagent tune` measures it"


def ipex_prepack_supported(topo: Topology) -> bool:
    """IPEX 2.8's bf16 weight prepack asserts without AVX512-BW/VL/DQ or AVX-NE-CONVERT."""
    return all(topo.has(f) for f in ("avx512bw", "avx512vl", "avx512dq")) or topo.has("avx_ne_convert")


def weights_prepack_rule(ctx: PlanContext) -> tuple[bool, str]:
    if ipex_prepack_supported(ctx.topo):
        return True, "the CPU has AVX512-BW/VL/DQ or AVX-NE-CONVERT, which IPEX's bf16 prepack needs"
    return False, "IPEX 2.8's bf16 weight prepack asserts without AVX512-BW/VL/DQ or AVX-NE-CONVERT"


#: Every decided setting, in the order it is decided (later rules read earlier values).
RULES: tuple[Rule, ...] = (
    Rule("allocator", allocator_rule, allocator_honour),
    Rule("malloc_conf", malloc_conf_rule, normalize=malloc_conf_normalize),
    Rule("omp_runtime", omp_runtime_rule, omp_runtime_honour),
    Rule("omp_num_threads", omp_num_threads_rule, check=omp_num_threads_check),
    Rule("binding", binding_rule, binding_honour),
    Rule("membind", membind_rule, membind_honour),
    Rule("kmp_affinity", kmp_affinity_rule),
    Rule("kmp_blocktime", kmp_blocktime_rule),
    Rule("precision", precision_rule, warn=precision_warn),
    Rule("backend", backend_rule, backend_honour),
    Rule("channels_last", channels_last_rule),
    Rule("compile", compile_rule, compile_honour),
    Rule("compile_autotune", compile_autotune_rule),
    Rule("weights_prepack", weights_prepack_rule),
)
