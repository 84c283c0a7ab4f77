"""The tuning plan: topology + host facts in, settings with reasons out.

This module holds every topology-to-settings rule (:func:`make_plan`). The CLI,
`sdagent tune`, the ladder and the Ansible roles (through `sdagent plan --json`
and `sdagent env`) all get their settings from here; nothing re-derives them.

Every setting is decided once, by :meth:`_Resolver.decide`: the value given
(override or plan file) or the rule's, then what this host can honour. A
fallback (a library missing, numactl absent, IPEX unusable) happens *inside*
the decision, so the recorded decision always says the value in effect and
why: what `sdagent plan` prints and the comments of the env file cannot
disagree with the settings.

A plan is a hypothesis: `sdagent tune` measures alternatives and writes the
winner as a plan file, whose settings come back in here as `file_settings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from sdagent.errors import BadInput
from sdagent.host.software import HostFacts
from sdagent.host.topology import Topology, native_bf16_flag
from sdagent.planning.layout import Instance, PlanRequest, layout_instances
from sdagent.planning.settings import (KMP_AFFINITY_COMPACT, KNOBS, LIBRARY_KNOBS, MALLOC_CONF_PROFILES,
                                       UNSET)

#: Settings whose right value depends on the instance layout: re-derived whenever a
#: plan is laid out anew (a plan file's 8 threads do not fit a 4-CPU instance).
LAYOUT_KEYS: tuple[str, ...] = ("omp_num_threads", "binding", "membind", "kmp_affinity", "kmp_blocktime")

_INSTALL = {"jemalloc": "install libjemalloc2", "tcmalloc": "install libgoogle-perftools4",
            "iomp": "pip install intel-openmp into the agent's venv"}


@dataclass(frozen=True)
class Decision:
    key: str
    value: Any
    reason: str


@dataclass(frozen=True)
class Plan:
    settings: dict[str, Any]  # every knob, resolved: the reproducible part
    instances: tuple[Instance, ...]
    decisions: tuple[Decision, ...]
    isa_flags: tuple[str, ...] = ()  # of the topology the plan was made for
    missing_libraries: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    source: str = "derived"  # derived | tuned | file, "+overrides" when --set/--overrides changed it
    request: PlanRequest = PlanRequest()
    topology_summary: str = ""
    numactl: str | None = None
    taskset: str | None = None
    plan_file: str | None = None
    tuning: dict[str, Any] | None = None  # what `sdagent tune` measured, when tuned
    facts: dict[str, Any] | None = None  # HostFacts.to_dict() of the host it was made on
    objective: str = "latency"  # what the layout serves: latency (one image fast) or throughput (images/min)
    #: preload paths a plan file named that this host cannot preload: (path, why)
    dropped_libraries: tuple[tuple[str, str], ...] = ()
    #: settings a plan file asked for that this host cannot honour: (key, asked, used, why)
    fallbacks: tuple[tuple[str, Any, Any, str], ...] = ()

    def __getattr__(self, name: str) -> Any:
        # plan.allocator, plan.backend, ... read the resolved settings.
        settings = self.__dict__.get("settings", {})
        if name in settings:
            return settings[name]
        raise AttributeError(name)

    def instance(self, index: int = 0) -> Instance:
        if not 0 <= index < len(self.instances):
            raise BadInput(f"instance {index} out of range: this plan has {len(self.instances)} "
                           f"instance(s), 0..{len(self.instances) - 1}")
        return self.instances[index]

    @property
    def preload(self) -> tuple[str, ...]:
        libs: list[str] = []
        s = self.settings
        if s["allocator"] in ("jemalloc", "tcmalloc"):
            libs.append(s[LIBRARY_KNOBS[s["allocator"]]])
        if s["omp_runtime"] == "intel":
            libs.append(s["iomp_path"])
        return tuple(libs)

    def env(self, index: int = 0) -> dict[str, str]:
        """Environment variables for one instance (what the env file holds)."""
        inst = self.instance(index)
        s = self.settings
        env: dict[str, str] = {}
        if self.preload:
            env["LD_PRELOAD"] = ":".join(self.preload)
        if s["allocator"] == "jemalloc" and s["malloc_conf"] != UNSET:
            env["MALLOC_CONF"] = s["malloc_conf"]
        env["OMP_NUM_THREADS"] = str(s["omp_num_threads"])
        if s["omp_runtime"] == "intel":
            if s["kmp_affinity"] != UNSET:
                env["KMP_AFFINITY"] = s["kmp_affinity"]
            if s["kmp_blocktime"] != UNSET:
                env["KMP_BLOCKTIME"] = str(s["kmp_blocktime"])
        env["SDAGENT_INSTANCE"] = str(inst.index)
        return env

    def launcher(self, index: int = 0) -> list[str]:
        """The binding prefix for one instance: numactl/taskset argv, or nothing."""
        inst = self.instance(index)
        b = self.settings["binding"]
        if b == "numactl":
            argv = [self.numactl or "numactl", f"--physcpubind={inst.cpulist}"]
            if self.settings["membind"] and inst.node is not None:
                argv.append(f"--membind={inst.node}")
            return argv
        if b == "taskset":
            return [self.taskset or "taskset", "-c", inst.cpulist]
        return []

    def expected_affinity(self, index: int, allowed: tuple[int, ...]) -> tuple[int, ...]:
        """The CPUs a process under this plan should be allowed to run on."""
        if self.settings["binding"] == "none":
            return tuple(sorted(allowed))
        return tuple(sorted(self.instance(index).cpus))

    def summary(self) -> str:
        return summary_line(self.settings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "sdagent-plan/1",
            "source": self.source,
            "objective": self.objective,
            "plan_file": self.plan_file,
            "topology_summary": self.topology_summary,
            "isa_flags": list(self.isa_flags),
            "request": self.request.to_dict(),
            "settings": dict(self.settings),
            "backend": self.settings["backend"],
            "precision": self.settings["precision"],
            "summary": self.summary(),
            "env": self.env(0),
            "preload": list(self.preload),
            "instances": [
                {"index": i.index, "cpus": i.cpulist, "cpu_ids": list(i.cpus), "mem_node": i.node,
                 "threads": self.settings["omp_num_threads"], "binding": self.settings["binding"],
                 "launcher": self.launcher(i.index), "env": self.env(i.index)}
                for i in self.instances
            ],
            "decisions": [{"key": d.key, "value": d.value, "reason": d.reason} for d in self.decisions],
            "missing_libraries": list(self.missing_libraries),
            "dropped_libraries": [{"path": p, "why": w} for p, w in self.dropped_libraries],
            "fallbacks": [{"key": k, "asked": a, "used": u, "why": w} for k, a, u, w in self.fallbacks],
            "warnings": list(self.warnings),
            "facts": self.facts,
            "tuning": self.tuning,
        }


def summary_line(settings: Mapping[str, Any]) -> str:
    """One line of the settings that matter for speed (tables, reports, tune's candidates)."""
    s = settings
    alloc = str(s.get("allocator", "?"))
    if alloc == "jemalloc" and s.get("malloc_conf") not in (None, UNSET):
        mc = str(s["malloc_conf"])
        alloc += "(" + next((k for k, v in MALLOC_CONF_PROFILES.items() if mc in (k, v)), "custom") + ")"
    parts = [alloc, f"omp={s.get('omp_runtime')}", f"threads={s.get('omp_num_threads')}",
             f"bind={s.get('binding')}"]
    if s.get("omp_runtime") == "intel":
        parts.append(f"blocktime={s.get('kmp_blocktime')}")
    parts += [f"{s.get('backend')} {s.get('precision')}",
              "channels_last" if s.get("channels_last") else "contiguous",
              "compiled" if s.get("compile") else "eager"]
    return ", ".join(str(p) for p in parts)


def ipex_prepack_supported(topo: Topology) -> bool:
    """IPEX 2.8's bf16 weight prepack asserts without AVX512-BW/VL/DQ or AVX-NE-CONVERT."""
    return all(topo.has(f) for f in ("avx512bw", "avx512vl", "avx512dq")) or topo.has("avx_ne_convert")


#: A check of what this host can honour: (fallback value, why) when it cannot, else None.
Honour = Callable[[Any], "tuple[Any, str] | None"]


class _Resolver:
    """Resolves each knob: CLI override, else plan-file setting, else the topology rule; then the host."""

    def __init__(self, overrides: Mapping[str, Any], file_settings: Mapping[str, Any], source: str):
        self.overrides = dict(overrides)
        self.file = dict(file_settings)
        self.source = source
        self.values: dict[str, Any] = {}
        self.decisions: list[Decision] = []
        self.warnings: list[str] = []
        self.missing: list[str] = []
        self.fallbacks: list[tuple[str, Any, Any, str]] = []

    def given(self, key: str) -> tuple[Any, str] | None:
        if key in self.overrides:
            return self.overrides[key], "override"
        if key in self.file:
            return self.file[key], self.source
        return None

    def decide(self, key: str, rule: Callable[[], tuple[Any, str]], honour: Honour | None = None,
               normalize: Callable[[Any], tuple[Any, str]] | None = None) -> Any:
        """Record the value in effect: given or ruled, then what the host can honour.

        An override the host cannot honour is an error (the user asked for it
        here); a plan file's value falls back with a warning (it may come from
        another host), and the decision says both.
        """
        g = self.given(key)
        if g is not None:
            value, origin = g
            reason = "set by --set/--overrides" if origin == "override" else f"from the {origin} plan file"
        else:
            value, reason = rule()
            origin = "rule"
        if normalize is not None:
            value, note = normalize(value)
            reason += note
        fallback = honour(value) if honour is not None else None
        if fallback is not None:
            kept, why = fallback
            if origin == "override":
                raise BadInput(f"{key}={value} but {why}")
            if origin != "rule":
                self.warnings.append(f"{key}={value} asked by the {origin} plan file, but {why}: using {kept}")
                self.fallbacks.append((key, value, kept, why))
            reason = f"{reason}: {value} asked, but {why}, so {kept}"
            value = kept
        self.values[key] = value
        self.decisions.append(Decision(key, value, reason))
        return value


def make_plan(
    topo: Topology,
    facts: HostFacts,
    request: PlanRequest = PlanRequest(),
    *,
    file_settings: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    source: str = "derived",
    plan_file: str | None = None,
    tuning: dict[str, Any] | None = None,
    instances: tuple[Instance, ...] = (),
    dropped_libraries: tuple[tuple[str, str], ...] = (),
    fallbacks: tuple[tuple[str, Any, Any, str], ...] = (),
    objective: str = "latency",
) -> Plan:
    """Derive the plan. Pure: everything it knows comes in through its arguments.

    `overrides` (from the user) are strict: asking for something the host
    cannot honour is an error. `file_settings` (from a plan file made
    elsewhere) are lenient: what this host cannot honour falls back, with a
    warning and a reason. `instances` (a saved layout) is kept when all its
    CPUs are online here; laid out anew, the layout's own settings are re-derived.
    `dropped_libraries` and `fallbacks` are what the plan this one is made from could
    not honour (a plan file's, handed on by `sdagent exec`): they stay on record.
    """
    overrides = dict(overrides or {})
    file_settings = dict(file_settings or {})
    warnings = [f"the plan file's library {path} cannot be preloaded here: {why}" for path, why in dropped_libraries]
    online = {c.id for c in topo.cpus}
    if not instances or not all(set(i.cpus) <= online for i in instances):
        if instances:
            warnings.append("the plan file's instance layout names CPUs this host lacks: laid out anew")
        if file_settings and any(k in file_settings for k in LAYOUT_KEYS) and (
                instances or request.instances is not None or request.cores_per_instance is not None):
            # The file's threads, binding and KMP_* were measured for another layout.
            file_settings = {k: v for k, v in file_settings.items() if k not in LAYOUT_KEYS}
        instances = layout_instances(topo, request)
    r = _Resolver(overrides, file_settings, source)
    r.warnings += warnings
    libs = facts.libraries

    # Library paths: facts, unless given.
    for kind, key in LIBRARY_KNOBS.items():
        g = r.given(key)
        r.values[key] = g[0] if g else libs.get(kind)

    def has_lib(kind: str) -> bool:
        return bool(r.values.get(LIBRARY_KNOBS[kind]))

    def lib_or(fallback: str) -> Honour:
        def honour(value: Any) -> tuple[Any, str] | None:
            kind = "iomp" if value == "intel" else value
            if kind not in LIBRARY_KNOBS or has_lib(kind):
                return None
            r.missing.append(kind)
            return fallback, f"lib{kind} was not found on this host ({_INSTALL[kind]}, or --set {kind}_path=PATH)"
        return honour

    # Allocator
    def allocator_rule() -> tuple[str, str]:
        if has_lib("jemalloc"):
            return "jemalloc", ("jemalloc found; the demo's first step (with libiomp5 and pinning: "
                                "32.3 s -> 11.8 s on a 32-core Sapphire Rapids)")
        r.missing.append("jemalloc")
        if has_lib("tcmalloc"):
            return "tcmalloc", "jemalloc not found (install libjemalloc2); tcmalloc found, the next best"
        return "default", "neither jemalloc nor tcmalloc found (install libjemalloc2): glibc malloc"

    r.decide("allocator", allocator_rule, lib_or("default"))

    def malloc_conf_rule() -> tuple[str, str]:
        if r.values["allocator"] == "jemalloc":
            return "demo", "the published demo's MALLOC_CONF (long-lived decay, background purging)"
        return UNSET, "only jemalloc reads MALLOC_CONF"

    # A profile name is expanded inside the decision: the decision shows the string in effect.
    r.decide("malloc_conf", malloc_conf_rule, normalize=lambda v: (
        (MALLOC_CONF_PROFILES[v], f" (profile '{v}')") if v in MALLOC_CONF_PROFILES else (v, "")))

    # OpenMP runtime
    def omp_rule() -> tuple[str, str]:
        if has_lib("iomp"):
            return "intel", "libiomp5 found: Intel OpenMP, as in the demo's recipe"
        r.missing.append("iomp")
        return "default", "libiomp5 not found (pip install intel-openmp into the agent's venv): torch's own OpenMP"

    r.decide("omp_runtime", omp_rule, lib_or("default"))
    intel = r.values["omp_runtime"] == "intel"

    inst0 = instances[0]
    cores0 = len(inst0.cpus) if not request.use_smt else len({topo.cpu(c).core for c in inst0.cpus})
    cg = f" (cgroup quota {topo.cgroup.cpus:g} CPUs)" if topo.cgroup else ""
    threads = r.decide("omp_num_threads", lambda: (
        len(inst0.cpus),
        f"one thread per {'CPU' if request.use_smt else 'physical core'} of the instance: "
        f"{cores0} core(s){cg}; SMT siblings would share a core's FPUs"))
    if threads > topo.logical_cpus:
        raise BadInput(f"invalid value {threads} for plan setting 'omp_num_threads': "
                       f"this host has {topo.logical_cpus} logical CPUs")

    # Binding
    all_allowed = len(instances) == 1 and set(inst0.cpus) == set(topo.allowed_cpus)

    def binding_rule() -> tuple[str, str]:
        if all_allowed:
            return "none", ("the instance uses every CPU this process may use, so pinning adds nothing "
                            "(and pinning measured slower than stock on a 2-core VM)")
        why = ("instances share the host" if len(instances) > 1 else
               "the instance uses a subset of the allowed CPUs (one NUMA node, one thread per core)")
        if facts.numactl and facts.numa_permitted:
            return "numactl", f"{why}: pin with numactl"
        if facts.taskset:
            return "taskset", (f"{why}; numactl {'refuses memory binding here' if facts.numactl else 'not found'}"
                               ": pin with taskset")
        return "none", f"{why}, but neither numactl nor taskset is installed"

    def binding_honour(value: str) -> tuple[str, str] | None:
        if value == "numactl" and not facts.numactl:
            return ("taskset" if facts.taskset else "none"), "numactl is not installed on this host"
        if value == "taskset" and not facts.taskset:
            return "none", "taskset is not installed on this host"
        return None

    r.decide("binding", binding_rule, binding_honour)
    multi_node = len(topo.nodes) > 1
    r.decide("membind", lambda: (
        (r.values["binding"] == "numactl" and multi_node and facts.numa_permitted and inst0.node is not None),
        "memory bound to the instance's node (several NUMA nodes, binding permitted)"
        if multi_node else "one NUMA node: nothing to bind memory to (the demo bound none)"),
        lambda v: (False, "this host refuses NUMA memory binding (set_mempolicy)")
        if v and not facts.numa_permitted else None)

    pinned = r.values["binding"] != "none"
    r.decide("kmp_affinity", lambda: (
        (KMP_AFFINITY_COMPACT, "threads pinned compactly to the instance's cores (PyTorch's launcher's value)")
        if intel and pinned else
        (UNSET, "not pinned: leave thread placement to the OS" if intel else "only Intel OpenMP reads KMP_*")))
    r.decide("kmp_blocktime", lambda: (
        (1, "several instances share the host: idle threads must not spin on their neighbours' cores")
        if intel and len(instances) > 1 else
        (UNSET, "one latency instance: the default 200 ms spin keeps threads hot between ops "
                "(BLOCKTIME=1 measured slower on a 2-core VM)" if intel else "only Intel OpenMP reads KMP_*")))

    # Precision and backend
    bf16_flag = native_bf16_flag(topo.flags)

    def precision_rule() -> tuple[str, str]:
        if bf16_flag:
            return "bf16", f"the CPU has {bf16_flag}: bf16 runs natively (the demo's 11.8 s -> 5.4 s step)"
        return "fp32", "no AMX-BF16 or AVX512-BF16: bf16 would be emulated and slower than fp32"

    if r.decide("precision", precision_rule) == "bf16" and not bf16_flag:
        r.warnings.append("precision=bf16 on a CPU without AMX-BF16/AVX512-BF16: bf16 is emulated and slow here")

    def backend_rule() -> tuple[str, str]:
        if facts.ipex.usable:
            return "ipex", facts.ipex.reason
        return "native", f"{facts.ipex.reason}: upstream PyTorch (channels_last, autocast, torch.compile)"

    r.decide("backend", backend_rule,
             lambda v: ("native", f"IPEX is not usable here ({facts.ipex.reason})")
             if v == "ipex" and not facts.ipex.usable else None)

    r.decide("channels_last", lambda: (True, "channels_last suits oneDNN's convolution kernels (the demo's recipe)"))
    def compile_rule() -> tuple[bool, str]:
        if r.values["backend"] != "native":
            return False, "IPEX optimizes the graph itself"
        if not facts.cxx:
            return False, "no C++ compiler (g++) to build compiled packages: eager"
        if r.values["precision"] == "bf16" and bf16_flag:
            return True, (f"bf16 runs natively ({bf16_flag}) and {facts.cxx} can build: the UNet, VAE decoder "
                          "and text encoder run as AOTInductor packages, built once and loaded in seconds "
                          "(the compiled image ran at 1.43x eager bf16's speed on a 2-core AVX512-BF16 VM: "
                          "docs/results/zen5-2c/ladder)")
        return False, "fp32 here: compiled only where `sdagent tune` measures it faster"

    r.decide("compile", compile_rule,
             lambda v: (False, "no C++ compiler (g++) to build compiled packages") if v and not facts.cxx
             and r.values["backend"] == "native" else None)
    r.decide("compile_autotune", lambda: (False, "max-autotune makes builds much longer; `sdagent tune` measures it"))
    r.decide("weights_prepack", lambda: (
        (True, "the CPU has AVX512-BW/VL/DQ or AVX-NE-CONVERT, which IPEX's bf16 prepack needs")
        if ipex_prepack_supported(topo) else
        (False, "IPEX 2.8's bf16 weight prepack asserts without AVX512-BW/VL/DQ or AVX-NE-CONVERT")))

    settings = {k: r.values.get(k) for k in KNOBS}
    for k, v in settings.items():
        if v is None and k not in LIBRARY_KNOBS.values():
            raise AssertionError(f"plan setting {k} left unresolved")  # a bug, not bad input
    return Plan(
        settings=settings,
        instances=instances,
        decisions=tuple(r.decisions),
        isa_flags=tuple(topo.flags),
        missing_libraries=tuple(dict.fromkeys(r.missing)),
        warnings=tuple(r.warnings),
        source=f"{source}+overrides" if overrides and not source.endswith("+overrides") else source,
        request=request,
        topology_summary=topo.summary(),
        numactl=facts.numactl,
        taskset=facts.taskset,
        plan_file=plan_file,
        tuning=tuning,
        facts=facts.to_dict(),
        dropped_libraries=tuple(dropped_libraries),
        fallbacks=tuple(dict.fromkeys(tuple(fallbacks) + tuple(r.fallbacks))),
        objective=objective,
    )
