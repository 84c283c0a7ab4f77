"""The planner's rules: one named function per setting, its honour check beside it.

Each setting of :data:`sdagent.planning.settings.KNOBS` has one :class:`Rule`
in :data:`RULES` (the library paths too: the host's copy, or a plan file's,
replaced by the host's when this host cannot preload it):

* ``rule(ctx) -> (value, reason)``: what the topology and the host facts call
  for, and why (the reason names the source of any figure it quotes);
* ``honour(ctx, value) -> (fallback, why) | None``: whether this host can honour
  a value (the rule's, a plan file's or an override's), and what it falls back to;
* optional ``normalize`` (a value's canonical form, with a note for the
  reason), ``check`` (refuses a value outright: :class:`BadInput`) and
  ``warn`` (a warning the plan carries when the value is legal but unwise).

Rules run in table order and may read the values decided before them
(``ctx.values``): the allocator before ``malloc_conf``, the OpenMP runtime before
``KMP_*``, the binding before ``membind``, the backend before the preloads, ``KMP_*`` and ``compile``.
Pure: facts in, decisions out; the only state is the context the loop fills.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from sdagent.errors import BadInput
from sdagent.host.software import HostFacts
from sdagent.host.hostclass import isa_class
from sdagent.host.topology import Topology, format_cpulist, native_bf16_flag
from sdagent.planning.evidence import Evidence, Finding, default_evidence, lever_finding
from sdagent.planning.layout import Instance, PlanRequest
from sdagent.planning.settings import LIBRARY_KNOBS, MALLOC_CONF_PROFILES, OPENVINO_OFF, UNSET

#: How to get each preloadable library (the hint a missing-library reason gives).
INSTALL_HINTS: dict[str, str] = {"jemalloc": "install libjemalloc2", "tcmalloc": "install libgoogle-perftools4",
                                 "iomp": "pip install intel-openmp into the agent's venv"}
_LIB_NAMES: dict[str, str] = {"jemalloc": "libjemalloc", "tcmalloc": "libtcmalloc", "iomp": "libiomp5"}


@dataclass
class PlanContext:
    """What every rule may read: the facts, the layout, and the values decided so far.

    ``values`` maps setting -> value in effect (library paths first, then each
    decided setting in table order); ``missing`` collects the library kinds a
    rule or an honour check wanted and this host lacks (the plan's
    ``missing_libraries``); ``unusable_paths`` are the library paths a plan
    file named that this host cannot preload (checked at the edge, by
    :mod:`sdagent.planning.planfile`), path -> why.
    """

    topo: Topology
    facts: HostFacts
    request: PlanRequest
    instances: tuple[Instance, ...]
    values: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    #: library paths a plan file named that this host cannot preload: path -> why (planfile checks them)
    unusable_paths: dict[str, str] = field(default_factory=dict)
    #: the measured effects the levers are kept or dropped by (planning.evidence; evidence.json)
    evidence: Evidence = field(default_factory=default_evidence)

    @property
    def isa_class(self) -> str:
        """The host's ISA class (host.hostclass.isa_class), which the evidence is kept by."""
        return isa_class(self.topo.flags)

    def finding(self, lever: str) -> Finding:
        """Whether `lever` measured faster on this host's class (planning.evidence.lever_finding)."""
        return lever_finding(self.evidence, lever, self.isa_class)

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
    def openvino(self) -> bool:
        """Backend openvino (decided before the preloads and threads: they depend on it)."""
        return self.values.get("backend") == "openvino"

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

def library_path_rule(kind: str) -> RuleFn:
    """The host's own copy of the library (host.software.find_library), or None when it has none."""

    def rule(ctx: PlanContext) -> tuple[str | None, str]:
        path = ctx.facts.libraries.get(kind)
        if path:
            return path, f"{_LIB_NAMES[kind]} found on this host"
        return None, f"{_LIB_NAMES[kind]} not found on this host ({INSTALL_HINTS[kind]})"
    rule.__name__ = f"{kind}_path_rule"
    return rule


def library_path_honour(kind: str) -> HonourFn:
    """A plan file's path this host cannot preload (another distribution's, a library removed since) is
    replaced by the host's own copy, or by none: the decision and the plan's fallbacks record which."""

    def honour(ctx: PlanContext, value: Any) -> tuple[Any, str] | None:
        why = ctx.unusable_paths.get(value) if value else None
        host = ctx.facts.libraries.get(kind)
        if why is None or host == value:  # the host's facts are the authority on its own files
            return None
        if host:
            return host, f"it cannot be preloaded on this host ({why}); the host's own copy is"
        return None, f"it cannot be preloaded on this host ({why}) and this host has no {_LIB_NAMES[kind]}"
    honour.__name__ = f"{kind}_path_honour"
    return honour


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


def _tune_tries(ctx: PlanContext, kind: str, lever: str) -> str:
    """The note an evidence-dropped preload ends with: tune measures it here, or it is not installed."""
    if ctx.has_lib(kind):
        return f"`sdagent tune` tries {lever} (found here)"
    return f"{lever} is not installed here ({INSTALL_HINTS[kind]} for `sdagent tune` to try it)"


def allocator_rule(ctx: PlanContext) -> tuple[str, str]:
    """jemalloc, else tcmalloc, each only where it measured faster on this host's class; else glibc malloc.

    Source: planning/evidence.json (jemalloc + libiomp5 measured 0.63-0.92x of the speed without
    them on the AMX, AVX512-BF16 and AVX2 hosts this project reached, torch 2.11-2.13). The HF demo's
    32.3 s -> 11.8 s (torch 1.13, bare-metal Sapphire Rapids) does not hold on them.
    """
    if ctx.openvino:
        return "default", OV_PRELOAD_WHY
    je, tc = ctx.finding("jemalloc"), ctx.finding("tcmalloc")
    for kind, f in (("jemalloc", je), ("tcmalloc", tc)):
        if f.keep:
            if ctx.has_lib(kind):
                return kind, f"{kind} found and kept: {f.evidence_text()}"
            ctx.missing.append(kind)
    return "default", (f"glibc malloc, stock's: jemalloc off, {je.evidence_text()}; tcmalloc off, "
                       f"{tc.evidence_text()}; {_tune_tries(ctx, 'jemalloc', 'jemalloc')}")


_allocator_library_honour = _library_honour("default")

#: Measured: GenAI 2026.4.1's Text2ImagePipeline aborts at load under an LD_PRELOADed allocator.
OV_PRELOAD_WHY = ("backend openvino: OpenVINO GenAI 2026.4's Text2ImagePipeline aborts (free(): invalid pointer) "
                  "under a preloaded jemalloc or tcmalloc (measured on the project's 2-core Zen VM): glibc malloc")


def allocator_honour(ctx: PlanContext, value: Any) -> tuple[Any, str] | None:
    """The library must be on this host; and backend openvino cannot run under a preloaded allocator."""
    if ctx.openvino and value != "default":
        return "default", OV_PRELOAD_WHY
    return _allocator_library_honour(ctx, value)


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


#: Why a compiled plan preloads libiomp5 whatever the eager evidence says. AOTInductor's packages are
#: built with -fopenmp and link the system's libgomp.so.1, while torch's PyPI wheel bundles its own
#: libgomp (libgomp-<hash>.so.1) and is loaded RTLD_LOCAL: without a preload the process runs two GNU
#: OpenMP runtimes, each with a full team of threads. A preloaded libiomp5 serves the GOMP_* interface
#: of both. Source: docs/results/amx-16c-defaults (16-core AMX, torch 2.11, sd15 256x256 4 steps): the
#: compiled bf16 plan without preloads ran 5.2-5.3 s/image, slower than fp32 stock's 4.7 s, and 1.5 s
#: with jemalloc + libiomp5; libiomp5 alone finished its bench, jemalloc alone did not within 75 s.
COMPILED_ONE_RUNTIME = ("compiled packages link the system's libgomp beside torch's bundled one: libiomp5 "
                        "preloaded serves both, so the process runs one OpenMP runtime (without it the "
                        "compiled plan ran slower than stock on the 16-core AMX host, "
                        "docs/results/amx-16c-defaults)")


#: Backend openvino: oneTBB threads it; a preloaded libiomp5 would be one more runtime in the process.
OV_NO_OPENMP_WHY = "backend openvino threads with oneTBB, not OpenMP: no libiomp5 preloaded"


def omp_runtime_rule(ctx: PlanContext) -> tuple[str, str]:
    """Intel OpenMP (libiomp5) for compiled packages (COMPILED_ONE_RUNTIME), or where it measured faster
    on this host's class; else torch's own.

    Backend openvino threads with oneTBB, not OpenMP: nothing to preload.

    Source: planning/evidence.json (libiomp5 with jemalloc, or in PyTorch's launcher, measured slower
    than stock on every class measured; spin-waiting costs most on loaded, shared vCPUs).
    """
    if ctx.openvino:
        return "default", OV_NO_OPENMP_WHY
    if ctx.values.get("compile") and ctx.has_lib("iomp"):
        return "intel", COMPILED_ONE_RUNTIME
    f = ctx.finding("libiomp5")
    if f.keep:
        if ctx.has_lib("iomp"):
            return "intel", f"libiomp5 found and kept: {f.evidence_text()}"
        ctx.missing.append("iomp")
    return "default", (f"torch's own OpenMP, stock's: libiomp5 off, {f.evidence_text()}; "
                       f"{_tune_tries(ctx, 'iomp', 'libiomp5')}")


_omp_library_honour = _library_honour("default")


def omp_runtime_honour(ctx: PlanContext, value: Any) -> tuple[Any, str] | None:
    """The library must be on this host; and backend openvino takes no OpenMP runtime (OV_NO_OPENMP_WHY)."""
    if ctx.openvino and value != "default":
        return "default", OV_NO_OPENMP_WHY
    return _omp_library_honour(ctx, value)


# --- threads and binding ----------------------------------------------------------------------------

def _quota(ctx: PlanContext) -> str:
    cg = ctx.topo.cgroup
    return f"a CFS quota of {cg.cpus:g} CPUs (cgroup v{cg.version})" if cg else "no quota"


def omp_num_threads_rule(ctx: PlanContext) -> tuple[int, str]:
    """One OpenMP thread per CPU of the instance: one per physical core unless use_smt, P-cores only on
    a hybrid CPU, the floor of a CFS quota (at least 1) where the budget is a quota."""
    inst, topo, smt = ctx.first, ctx.topo, ctx.request.use_smt
    n = len(inst.cpus)
    if topo.cpu_budget == "quota":
        return n, (f"the CPU budget is {_quota(ctx)}, not CPUs of its own: floor of the quota, "
                   f"{n} thread(s)")
    cores = n if not smt else len({(topo.cpu(c).socket, topo.cpu(c).core) for c in inst.cpus})
    unit = "CPU" if smt else "P-core" if topo.hybrid and not ctx.request.e_cores else "physical core"
    cg = f" (cgroup quota {topo.cgroup.cpus:g} CPUs)" if topo.cgroup else ""
    return n, (f"one thread per {unit} of the instance: {cores} core(s){cg}; SMT siblings would share "
               "a core's FPUs" + ("; E-cores left out: every parallel region would wait for them"
                                  if topo.hybrid and not ctx.request.e_cores else ""))


def omp_num_threads_check(ctx: PlanContext, value: Any) -> None:
    """More threads than logical CPUs is never what anyone meant: refused, whatever asked for it."""
    if value > ctx.topo.logical_cpus:
        raise BadInput(f"invalid value {value} for plan setting 'omp_num_threads': "
                       f"this host has {ctx.topo.logical_cpus} logical CPUs")


def _subset_why(ctx: PlanContext) -> str:
    """Why a single instance uses fewer CPUs than the process may run on."""
    topo, why = ctx.topo, []
    if topo.isolated_cpus and set(topo.isolated_cpus) & set(topo.allowed_cpus):
        why.append(f"the isolated CPUs {format_cpulist(topo.isolated_cpus)} (isolcpus/nohz_full) left out")
    if topo.hybrid and not ctx.request.e_cores:
        why.append("P-cores only")
    if ctx.request.sub_node:
        why.append("one NUMA node")
    elif topo.sockets > 1:
        why.append("one socket")
    why.append("one thread per core")
    return f"the instance uses a subset of the allowed CPUs ({', '.join(why)})"


def binding_rule(ctx: PlanContext) -> tuple[str, str]:
    """Pin (numactl, else taskset) when the instance uses a subset of CPUs this process owns; on a lone
    instance over every allowed CPU only where pinning measured faster on the host's class; else nothing.

    Never under a CFS quota: the mask is not the process's own, so every replica would pin to the same
    CPUs (issue 19: two 1-CPU cgroups both ran on CPU 0). Source of "pinning off on all CPUs":
    planning/evidence.json (PyTorch's launcher, which pins threads, measured slower than stock).
    """
    insts, facts, topo = ctx.instances, ctx.facts, ctx.topo
    if topo.cpu_budget == "quota":
        return "none", (f"the CPU budget is {_quota(ctx)} over a CPU mask this process does not own "
                        "(other replicas share it): pinning would put them all on the same CPUs")
    if len(insts) == 1 and set(ctx.first.cpus) == set(topo.allowed_cpus):
        f = ctx.finding("pinning")
        if not f.keep:
            return "none", (f"the instance uses every CPU this process may use, so nothing needs pinning; "
                            f"pinning off, {f.evidence_text()}")
        why = f"pinning kept, {f.evidence_text()}"
    else:
        why = "instances share the host" if len(insts) > 1 else _subset_why(ctx)
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
    """Bind memory to the instance's node(s) with memory on a multi-node host pinned with numactl.

    Each branch's reason describes its own value (the run-record rule). A memoryless node is never
    bound (numactl refuses it): the nearest node with memory by the distance table stands in.
    """
    topo, inst, binding = ctx.topo, ctx.first, ctx.values["binding"]
    if len(topo.nodes) == 1:
        return False, "one NUMA node: nothing to bind memory to (the demo bound none)"
    if binding != "numactl":
        return False, f"binding is {binding}, not numactl: memory left to the kernel's first-touch placement"
    if not ctx.facts.numa_permitted:
        return False, "this host refuses NUMA memory binding (set_mempolicy)"
    if not inst.mem_nodes:
        return False, ("the instance spans NUMA nodes and no node of it is chosen: memory left to the "
                       "kernel's first-touch placement")
    nodes = inst.mem_nodelist
    if inst.node is not None and inst.mem_nodes == (inst.node,):
        return True, f"memory bound to the instance's node {nodes} (several NUMA nodes, binding permitted)"
    if inst.node is not None:
        return True, (f"memory bound to node {nodes}, the nearest with memory: the instance's node "
                      f"{inst.node} has none (numactl refuses a memoryless node)")
    return True, (f"memory bound to the socket's nodes {nodes} (sub-NUMA clustering): each allocation "
                  "from the nearest of them")


def membind_honour(ctx: PlanContext, value: Any) -> tuple[Any, str] | None:
    """Containers often refuse set_mempolicy (facts.numa_permitted probes it); memory binding goes with
    numactl pinning; an instance with no node with memory has nothing to bind to."""
    if not value:
        return None
    if not ctx.facts.numa_permitted:
        return False, "this host refuses NUMA memory binding (set_mempolicy)"
    if ctx.values["binding"] != "numactl":
        return False, f"memory binding needs numactl pinning and the binding is {ctx.values['binding']}"
    if not ctx.first.mem_nodes:
        return False, "the instance has no NUMA node with memory to bind to"
    return None


#: Source: the issue's report (an OpenVINO process that inherits KMP_AFFINITY runs on one core).
OV_KMP_WHY = "an OpenVINO process must not inherit KMP_AFFINITY (with it OpenVINO runs on one core)"


def kmp_affinity_rule(ctx: PlanContext) -> tuple[str, str]:
    """Unset: where numactl/taskset confine the instance, its threads float inside its CPUs.

    Why not PyTorch's launcher's compact pinning: under KMP_AFFINITY, Intel OpenMP pins the main
    thread to one CPU at its first parallel region, and every subprocess and multiprocessing worker
    it starts afterwards inherits that one CPU (issue 19 item 8). `sdagent tune` measures compact
    pinning (an axis) and keeps it only where it is faster.
    """
    if ctx.openvino:
        return UNSET, OV_KMP_WHY
    if not ctx.intel_omp:
        return UNSET, "only Intel OpenMP reads KMP_*"
    if ctx.pinned:
        return UNSET, (f"{ctx.values['binding']} already confines the instance to its CPUs: threads float "
                       "inside them (KMP_AFFINITY would pin the main thread, and every process it starts, "
                       "to one CPU); `sdagent tune` measures compact pinning")
    return UNSET, "not pinned: leave thread placement to the OS"


def kmp_affinity_honour(ctx: PlanContext, value: Any) -> tuple[Any, str] | None:
    """Backend openvino: KMP_AFFINITY is never set, whatever asked for it."""
    if ctx.openvino and value != UNSET:
        return UNSET, OV_KMP_WHY
    return None


def kmp_blocktime_rule(ctx: PlanContext) -> tuple[Any, str]:
    """KMP_BLOCKTIME=1 when instances share the host (needed) or where it measured faster on the class;
    else Intel OpenMP's default 200 ms spin.

    Source: planning/evidence.json (PyTorch's launcher's KMP_BLOCKTIME=1 measured slower than stock).
    """
    if not ctx.intel_omp:
        return UNSET, "only Intel OpenMP reads KMP_*"
    if len(ctx.instances) > 1:
        return 1, "several instances share the host: idle threads must not spin on their neighbours' cores"
    f = ctx.finding("kmp_blocktime")
    if f.keep:
        return 1, f"KMP_BLOCKTIME=1 kept, {f.evidence_text()}"
    return UNSET, f"one latency instance: Intel OpenMP's default 200 ms spin; KMP_BLOCKTIME=1 off, {f.evidence_text()}"


# --- compute ----------------------------------------------------------------------------------------

def precision_rule(ctx: PlanContext) -> tuple[str, str]:
    """bf16 where the CPU runs it natively (AMX-BF16 / AVX512-BF16) and the evidence keeps it.

    Source: planning/evidence.json (native bf16 1.5-2.4x fp32's speed on every class measured).
    """
    flag = native_bf16_flag(ctx.topo.flags)
    if not flag:
        return "fp32", "no AMX-BF16 or AVX512-BF16: bf16 would be emulated and slower than fp32"
    f = ctx.finding("native_bf16")
    if f.keep:
        return "bf16", f"the CPU has {flag}: bf16 runs natively, {f.evidence_text()}"
    return "fp32", f"the CPU has {flag}, but native bf16 is off here: {f.evidence_text()}"


def precision_warn(ctx: PlanContext, value: Any) -> str | None:
    if value == "bf16" and not native_bf16_flag(ctx.topo.flags):
        return "precision=bf16 on a CPU without AMX-BF16/AVX512-BF16: bf16 is emulated and slow here"
    return None


def backend_rule(ctx: PlanContext) -> tuple[str, str]:
    """IPEX when usable with this torch (host.software.ipex_status), else upstream PyTorch."""
    ipex = ctx.facts.ipex
    if ipex.usable:
        return "ipex", ipex.reason
    return "native", f"{ipex.reason}: upstream PyTorch (channels_last, autocast, AOTInductor packages)"


def backend_honour(ctx: PlanContext, value: Any) -> tuple[Any, str] | None:
    """IPEX must be usable here; backend openvino in bf16 needs native bf16: OpenVINO's CPU plugin takes
    INFERENCE_PRECISION_HINT bf16 as a hint and runs f32 without AMX-BF16/AVX512-BF16, so the plan would
    say bf16 and verify's precision check would fail it (exit 3)."""
    ipex = ctx.facts.ipex
    if value == "ipex" and not ipex.usable:
        return "native", f"IPEX is not usable here ({ipex.reason})"
    if value == "openvino" and ctx.values.get("precision") == "bf16" and not native_bf16_flag(ctx.topo.flags):
        return "native", ("precision bf16 without AMX-BF16 or AVX512-BF16 here: OpenVINO's CPU plugin would run "
                          "f32 (set precision=fp32 for backend openvino)")
    return None


def channels_last_rule(ctx: PlanContext) -> tuple[bool, str]:
    """channels_last where the evidence keeps it: oneDNN's convolutions prefer NHWC (the demo's recipe).

    Source: planning/evidence.json (channels_last 1.10x contiguous's speed, bf16, on the 2-core AMX VM).
    """
    f = ctx.finding("channels_last")
    if f.keep:
        return True, f"channels_last suits oneDNN's convolution kernels (the demo's recipe), {f.evidence_text()}"
    return False, f"contiguous, stock's: channels_last off, {f.evidence_text()}; `sdagent tune` tries it"


def compile_rule(ctx: PlanContext) -> tuple[bool, str]:
    """AOTInductor packages where bf16 is native, a compiler can build and the evidence keeps it; else eager.

    Source: planning/evidence.json (compiled 1.4-2.0x eager bf16's speed on every class measured).
    """
    facts = ctx.facts
    if ctx.values["backend"] != "native":
        return False, ("OpenVINO's CPU plugin compiles the export itself" if ctx.openvino
                       else "IPEX optimizes the graph itself")
    if not facts.cxx:
        return False, "no C++ compiler (g++) to build compiled packages: eager"
    if facts.cxx_error:
        return False, f"compile unavailable: {facts.cxx_error}"
    flag = native_bf16_flag(ctx.topo.flags)
    if ctx.values["precision"] == "bf16" and flag:
        f = ctx.finding("compile")
        if not f.keep:
            return False, f"compile off: {f.evidence_text()}; `sdagent tune` tries it"
        return True, (f"bf16 runs natively ({flag}) and {facts.cxx} can build: the UNet, VAE decoder "
                      f"and text encoder run as AOTInductor packages, built once and loaded in seconds; "
                      f"{f.evidence_text()}")
    return False, "fp32 here: compiled only where `sdagent tune` measures it faster"


def compile_honour(ctx: PlanContext, value: Any) -> tuple[Any, str] | None:
    """Compiled packages are the native backend's, and need a C++ compiler that can build inductor's code
    (facts.cxx_error says why not). IPEX and OpenVINO compile the graph themselves: compile=true there
    would be a setting the run ignores, so an override naming it is refused."""
    if not value:
        return None
    if ctx.values["backend"] != "native":
        return False, (("backend openvino runs its export, which OpenVINO's CPU plugin compiles itself"
                        if ctx.openvino else "backend ipex optimizes the graph itself (ipex.optimize)")
                       + ": compile is the native backend's (--backend native)")
    if not ctx.facts.cxx:
        return False, "no C++ compiler (g++) to build compiled packages"
    if ctx.facts.cxx_error:
        return False, f"compile unavailable: {ctx.facts.cxx_error}"
    return None


def compile_autotune_rule(ctx: PlanContext) -> tuple[bool, str]:
    return False, "max-autotune makes builds much longer; `sdagent tune` measures it"


def quantize_rule(ctx: PlanContext) -> tuple[str, str]:
    """The model's own UNet: int8 (PT2E) is lossy, so no rule picks it without a measurement.

    Source: issue 22, item 5 (lossy speedups only behind a quality gate): `sdagent tune` measures
    `quantize: int8` on the native compiled path and keeps it only where it is faster and its images pass
    the fidelity gate against the fp32 reference (measuring/fidelity.py).
    """
    if ctx.values["backend"] != "native":
        return "none", "only the native backend's compiled UNet is quantized by PT2E"
    return "none", ("the model's own UNet: int8 (PT2E) changes pixels; `sdagent tune` keeps it only where "
                    "faster and within the fidelity bound")


def quantize_check(ctx: PlanContext, value: Any) -> None:
    """Honour check: the int8 UNet exists only as a compiled package of the native backend (X86InductorQuantizer's
    int8 with the rest of the UNet in the plan's precision: fp32, or bf16 as PyTorch's int8-mixed-bf16)."""
    if value != "int8":
        return
    v = ctx.values
    why = (f"backend is {v.get('backend')}" if v.get("backend") != "native" else
           "compile is off" if not v.get("compile") else None)
    if why:
        raise BadInput(f"invalid value 'int8' for plan setting 'quantize': the int8 UNet is a compiled package "
                       f"of the native backend (set backend=native, compile=true); {why}")


def vae_rule(ctx: PlanContext) -> tuple[str, str]:
    """The model's own VAE: the tiny autoencoder changes pixels, so no rule picks it without a measurement.

    Source: issue 22, item 5 (lossy speedups only behind a quality gate): `sdagent tune` measures `vae: tiny`
    where the model carries one (MODEL/vae_tiny) and keeps it only if it is faster and its images pass the
    fidelity gate against the fp32 reference (measuring/fidelity.py).
    """
    return "full", ("the model's own VAE: the tiny autoencoder (MODEL/vae_tiny) changes pixels; `sdagent tune` "
                    "keeps it only where faster and within the fidelity bound")


def vae_check(ctx: PlanContext, value: Any) -> None:
    """Honour check: the tiny VAE swaps a torch module; backend openvino decodes with its export's own VAE."""
    if value == "tiny" and ctx.values.get("backend") == "openvino":
        raise BadInput("invalid value 'tiny' for plan setting 'vae': backend openvino decodes with its export's "
                       "own VAE (vae tiny is for the native and ipex backends)")


def ipex_prepack_supported(topo: Topology) -> bool:
    """IPEX 2.8's bf16 weight prepack asserts without AVX512-BW/VL/DQ or AVX-NE-CONVERT."""
    return all(topo.has(f) for f in ("avx512bw", "avx512vl", "avx512dq")) or topo.has("avx_ne_convert")


def weights_prepack_rule(ctx: PlanContext) -> tuple[bool, str]:
    if ipex_prepack_supported(ctx.topo):
        return True, "the CPU has AVX512-BW/VL/DQ or AVX-NE-CONVERT, which IPEX's bf16 prepack needs"
    return False, "IPEX 2.8's bf16 weight prepack asserts without AVX512-BW/VL/DQ or AVX-NE-CONVERT"


# --- OpenVINO (backend openvino; pipeline.ov_backend.compile_config sends them) ----------------------

def openvino_only_honour(off: Any) -> HonourFn:
    """Honour check of an OpenVINO setting: on another backend only its `off` value (what the rule gives
    there) is honoured, since nothing reads the setting; an override naming another value is refused
    (the user would believe it in force), a plan file's falls back to `off` with a warning."""
    def honour(ctx: PlanContext, value: Any) -> tuple[Any, str] | None:
        if ctx.openvino or value == off:
            return None
        return off, f"only backend openvino reads it (backend is {ctx.values.get('backend')})"
    honour.__name__ = "openvino_only_honour"
    return honour


def ov_num_threads_rule(ctx: PlanContext) -> tuple[Any, str]:
    """INFERENCE_NUM_THREADS: the instance's thread count, as OMP_NUM_THREADS is for torch."""
    if not ctx.openvino:
        return UNSET, "only backend openvino reads it"
    n = ctx.values["omp_num_threads"]
    return n, f"one OpenVINO thread per thread of the instance ({n}, as OMP_NUM_THREADS for torch)"


def ov_num_threads_check(ctx: PlanContext, value: Any) -> None:
    if value != UNSET and value > ctx.topo.logical_cpus:
        raise BadInput(f"invalid value {value} for plan setting 'ov_num_threads': "
                       f"this host has {ctx.topo.logical_cpus} logical CPUs")


def ov_num_streams_rule(ctx: PlanContext) -> tuple[Any, str]:
    """One stream: an instance generates one image at a time; throughput comes from the plan's instances."""
    if not ctx.openvino:
        return UNSET, "only backend openvino reads it"
    return 1, ("one image at a time per instance: one stream, all its threads on it (throughput comes from "
               "the plan's instances, each its own process)")


def ov_performance_hint_rule(ctx: PlanContext) -> tuple[str, str]:
    """LATENCY: how OpenVINO's docs run SD on a CPU, and what the peer measures."""
    return "latency", ("each instance serves one image at a time: LATENCY, as OpenVINO's docs run SD-1.5 on "
                       "a CPU" if ctx.openvino else "only backend openvino reads it")


def ov_cpu_pinning_rule(ctx: PlanContext) -> tuple[bool, str]:
    """Pin OpenVINO's threads when the plan binds the instance to its own cores; else leave them to the OS."""
    if not ctx.openvino:
        return False, "only backend openvino reads it"
    if ctx.pinned:
        return True, "the instance is bound to its own cores: OpenVINO pins its threads to them"
    return False, ("the instance is not bound (binding none): threads left to the OS, as for the native "
                   "backend's unpinned OpenMP")


def ov_weights_rule(ctx: PlanContext) -> tuple[str, str]:
    """The model's own weights: int8 forms are lossy, so only an explicit setting or a tune candidate that
    passed the fidelity gate (tuning) chooses them."""
    if not ctx.openvino:
        return "full", "only backend openvino reads it"
    return "full", ("the model's own weights: int8 and int8-hybrid are lossy, chosen only when asked or when "
                    "`sdagent tune` measured them faster and within the fidelity bound")


#: Every decided setting, in the order it is decided (later rules read earlier values).
RULES: tuple[Rule, ...] = (
    *(Rule(key, library_path_rule(kind), library_path_honour(kind)) for kind, key in LIBRARY_KNOBS.items()),
    # precision and backend first: the preloads and KMP_* depend on the backend (openvino takes none),
    # and the OpenMP runtime on what the pipeline runs (compiled packages: see omp_runtime_rule)
    Rule("precision", precision_rule, warn=precision_warn),
    Rule("backend", backend_rule, backend_honour),
    Rule("allocator", allocator_rule, allocator_honour),
    Rule("malloc_conf", malloc_conf_rule, normalize=malloc_conf_normalize),
    Rule("channels_last", channels_last_rule),
    Rule("vae", vae_rule, check=vae_check),
    Rule("compile", compile_rule, compile_honour),
    Rule("compile_autotune", compile_autotune_rule),
    Rule("quantize", quantize_rule, check=quantize_check),
    Rule("weights_prepack", weights_prepack_rule),
    Rule("omp_runtime", omp_runtime_rule, omp_runtime_honour),
    Rule("omp_num_threads", omp_num_threads_rule, check=omp_num_threads_check),
    Rule("binding", binding_rule, binding_honour),
    Rule("membind", membind_rule, membind_honour),
    Rule("kmp_affinity", kmp_affinity_rule, kmp_affinity_honour),
    Rule("kmp_blocktime", kmp_blocktime_rule),
    Rule("ov_num_threads", ov_num_threads_rule, openvino_only_honour(OPENVINO_OFF["ov_num_threads"]),
         check=ov_num_threads_check),
    Rule("ov_num_streams", ov_num_streams_rule, openvino_only_honour(OPENVINO_OFF["ov_num_streams"])),
    Rule("ov_performance_hint", ov_performance_hint_rule,
         openvino_only_honour(OPENVINO_OFF["ov_performance_hint"])),
    Rule("ov_cpu_pinning", ov_cpu_pinning_rule, openvino_only_honour(OPENVINO_OFF["ov_cpu_pinning"])),
    Rule("ov_weights", ov_weights_rule, openvino_only_honour(OPENVINO_OFF["ov_weights"])),
)
