"""The tuning plan: topology + host facts in, settings with reasons out.

This module is the single source of truth for every topology-to-settings rule.
The CLI, `sdagent tune` and the Ansible roles (through `sdagent plan --json` and
`sdagent env`) all get their settings from :func:`make_plan`; nothing re-derives them.

A plan is a hypothesis: `sdagent tune` measures alternatives and writes the
winner as a plan file, whose settings come back in here as `file_settings`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from sdagent.errors import BadInput
from sdagent.hostfacts import HostFacts
from sdagent.topology import Topology, format_cpulist

#: MALLOC_CONF profiles. "demo" is the published HF demo's string; "short" is
#: PyTorch's launcher's; "long" is IPEX's tuning guide's (can OOM on long runs).
MALLOC_CONF_PROFILES: dict[str, str] = {
    "demo": "oversize_threshold:1,background_thread:true,metadata_thp:auto,"
            "dirty_decay_ms:60000,muzzy_decay_ms:60000",
    "short": "oversize_threshold:1,background_thread:true,metadata_thp:auto",
    "long": "oversize_threshold:1,background_thread:true,metadata_thp:auto,"
            "dirty_decay_ms:9000000000,muzzy_decay_ms:9000000000",
}
KMP_AFFINITY_COMPACT = "granularity=fine,compact,1,0"
UNSET = "unset"


# ---------------------------------------------------------------------------
# Settings: the knobs a plan fixes, their types, and their validation
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Knob:
    name: str
    kind: str  # choice | int | bool | str | path | int_or_unset | str_or_unset
    help: str
    choices: tuple[str, ...] = ()
    minimum: int | None = None


KNOBS: dict[str, Knob] = {k.name: k for k in (
    Knob("allocator", "choice", "memory allocator preloaded", ("jemalloc", "tcmalloc", "default")),
    Knob("malloc_conf", "str", "jemalloc MALLOC_CONF: a profile (demo, short, long) or a literal string"),
    Knob("omp_runtime", "choice", "OpenMP runtime: intel (libiomp5 preloaded) or torch's own", ("intel", "default")),
    Knob("omp_num_threads", "int", "OpenMP threads per instance", minimum=1),
    Knob("kmp_affinity", "str_or_unset", "KMP_AFFINITY (Intel OpenMP only), or 'unset'"),
    Knob("kmp_blocktime", "int_or_unset", "KMP_BLOCKTIME in ms (Intel OpenMP only), or 'unset'", minimum=0),
    Knob("binding", "choice", "how the instance is pinned to its cores", ("numactl", "taskset", "none")),
    Knob("membind", "bool", "bind memory to the instance's NUMA node (numactl -m)"),
    Knob("precision", "choice", "compute precision", ("bf16", "fp32")),
    Knob("backend", "choice", "inference backend", ("ipex", "native")),
    Knob("channels_last", "bool", "channels_last memory format for the UNet and VAE"),
    Knob("compile", "bool", "torch.compile the UNet (native backend)"),
    Knob("weights_prepack", "bool", "IPEX bf16 weight prepacking"),
    Knob("jemalloc_path", "path", "path of libjemalloc to preload"),
    Knob("tcmalloc_path", "path", "path of libtcmalloc to preload"),
    Knob("iomp_path", "path", "path of libiomp5 to preload"),
)}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_setting(key: str, raw: Any) -> Any:
    """Validate one setting; strings from `--set KEY=VALUE` are converted to the knob's type."""
    knob = KNOBS.get(key)
    if knob is None:
        raise BadInput(f"unknown plan setting {key!r} (valid: {', '.join(sorted(KNOBS))})")
    bad = f"invalid value {raw!r} for plan setting {key!r}"
    if knob.kind == "choice":
        val = str(raw).strip().lower()
        if val not in knob.choices:
            raise BadInput(f"{bad}: choose one of {', '.join(knob.choices)}")
        return val
    if knob.kind == "bool":
        if isinstance(raw, bool):
            return raw
        val = str(raw).strip().lower()
        if val in _TRUE:
            return True
        if val in _FALSE:
            return False
        raise BadInput(f"{bad}: expected true or false")
    if knob.kind in ("int", "int_or_unset"):
        if knob.kind == "int_or_unset" and (raw is None or str(raw).strip().lower() == UNSET):
            return UNSET
        if isinstance(raw, bool):
            raise BadInput(f"{bad}: expected an integer")
        try:
            val = int(str(raw).strip())
        except ValueError:
            raise BadInput(f"{bad}: expected an integer") from None
        if knob.minimum is not None and val < knob.minimum:
            raise BadInput(f"{bad}: must be >= {knob.minimum}")
        return val
    if knob.kind == "str_or_unset":
        val = "" if raw is None else str(raw).strip()
        return UNSET if val.lower() in ("", UNSET) else val
    if knob.kind == "path":
        p = str(raw).strip()
        if not p or not Path(p).is_file():
            raise BadInput(f"{bad}: no such file")
        return p
    val = str(raw).strip()
    if not val:
        raise BadInput(f"{bad}: empty")
    return val


def parse_settings(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: parse_setting(k, v) for k, v in raw.items()}


def parse_assignments(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings (from `--set`) into validated settings."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"invalid --set {item!r}: expected KEY=VALUE")
        out[key.strip()] = parse_setting(key.strip(), val)
    return out


def load_overrides_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML or JSON mapping of settings."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise BadInput(f"overrides file not found: {p}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise BadInput(f"overrides file {p} is not valid YAML/JSON: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadInput(f"overrides file {p} must hold a mapping of settings, not {type(data).__name__}")
    try:
        return parse_settings(data)
    except BadInput as exc:
        raise BadInput(f"overrides file {p}: {exc}") from None


# ---------------------------------------------------------------------------
# The plan record
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanRequest:
    """What the user asked of the layout (CLI options)."""

    instances: int | None = None
    cores_per_instance: int | None = None
    span_nodes: bool = False  # allow an instance to cross NUMA nodes
    use_smt: bool = False  # use SMT siblings as extra threads

    def to_dict(self) -> dict[str, Any]:
        return {"instances": self.instances, "cores_per_instance": self.cores_per_instance,
                "span_nodes": self.span_nodes, "use_smt": self.use_smt}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "PlanRequest":
        d = d or {}
        return cls(d.get("instances"), d.get("cores_per_instance"),
                   bool(d.get("span_nodes", False)), bool(d.get("use_smt", False)))


@dataclass(frozen=True)
class Decision:
    key: str
    value: Any
    reason: str


@dataclass(frozen=True)
class Instance:
    index: int
    cpus: tuple[int, ...]
    node: int | None  # NUMA node the instance lives on (None when it spans nodes)

    @property
    def cpulist(self) -> str:
        return format_cpulist(self.cpus)


@dataclass(frozen=True)
class Plan:
    settings: dict[str, Any]  # every knob, resolved: the reproducible part
    instances: tuple[Instance, ...]
    decisions: tuple[Decision, ...]
    missing_libraries: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    source: str = "derived"  # derived | tuned | file
    request: PlanRequest = PlanRequest()
    topology_summary: str = ""
    numactl: str | None = None
    taskset: str | None = None
    plan_file: str | None = None
    tuning: dict[str, Any] | None = None  # what `sdagent tune` measured, when tuned

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
        if s["allocator"] == "jemalloc":
            libs.append(s["jemalloc_path"])
        elif s["allocator"] == "tcmalloc":
            libs.append(s["tcmalloc_path"])
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
        if s["allocator"] == "jemalloc" and s.get("malloc_conf"):
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "sdagent-plan/1",
            "source": self.source,
            "plan_file": self.plan_file,
            "topology_summary": self.topology_summary,
            "request": self.request.to_dict(),
            "settings": dict(self.settings),
            "backend": self.settings["backend"],
            "precision": self.settings["precision"],
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
            "warnings": list(self.warnings),
            "tuning": self.tuning,
        }


@dataclass(frozen=True)
class LoadedPlan:
    settings: dict[str, Any]
    source: str
    request: PlanRequest
    tuning: dict[str, Any] | None
    instances: tuple[Instance, ...] = ()  # the saved layout ((): derive one)


#: Set by `sdagent exec` for its child: the plan in effect, as JSON, so a child
#: `sdagent verify` checks against the very plan (layout and overrides) it runs under,
#: even though its own affinity is already narrowed to one instance.
PLAN_ENV = "SDAGENT_PLAN_JSON"


def plan_env_value(plan: "Plan") -> str:
    d = plan.to_dict()
    keep = ("format", "source", "plan_file", "request", "settings", "instances", "tuning")
    d = {k: d[k] for k in keep}
    d["instances"] = [{"index": i["index"], "cpu_ids": i["cpu_ids"], "mem_node": i["mem_node"]}
                      for i in d["instances"]]
    return json.dumps(d, separators=(",", ":"))


def load_plan_file(path: str | os.PathLike[str]) -> LoadedPlan:
    """Read a plan file written by `sdagent plan -o` or `sdagent tune -o`; settings are re-validated."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise BadInput(f"plan file not found: {p}") from None
    except (OSError, ValueError) as exc:
        raise BadInput(f"plan file {p} is not valid JSON: {exc}") from None
    return parse_plan_data(data, f"plan file {p}")


def parse_plan_data(data: Any, origin: str) -> LoadedPlan:
    """Validate a plan record (a plan file's content, or exec's SDAGENT_PLAN_JSON)."""
    if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
        raise BadInput(f"{origin} has no 'settings' mapping: not an sdagent plan")
    settings = dict(data["settings"])
    # Library paths are host facts: re-found on the host that loads the plan.
    for k in ("jemalloc_path", "tcmalloc_path", "iomp_path"):
        if settings.get(k) and not Path(settings[k]).is_file():
            settings.pop(k)
    try:
        settings = parse_settings({k: v for k, v in settings.items() if v is not None})
        instances = tuple(
            Instance(int(i["index"]), tuple(int(c) for c in i["cpu_ids"]),
                     None if i.get("mem_node") is None else int(i["mem_node"]))
            for i in data.get("instances") or ()
        )
    except BadInput as exc:
        raise BadInput(f"{origin}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"{origin}: bad 'instances' entry ({type(exc).__name__}: {exc})") from None
    source = str(data.get("source") or "file")
    if source.removesuffix("+overrides") not in ("derived", "tuned", "file"):
        source = "file"
    return LoadedPlan(settings, source,
                      PlanRequest.from_dict(data.get("request")), data.get("tuning"), instances)


# ---------------------------------------------------------------------------
# Layout: instances on cores
# ---------------------------------------------------------------------------


def usable_cores(topo: Topology, use_smt: bool = False) -> list[tuple[int, tuple[int, ...]]]:
    """(node, cpus) per physical core this process may use, in node then CPU order.

    A core counts when at least one of its threads is allowed; by default only
    its first allowed thread is used (one OpenMP thread per physical core).
    A cgroup CPU quota caps the number of cores.
    """
    allowed = set(topo.allowed_cpus)
    seen: dict[tuple[int, int], list[int]] = {}
    node_of: dict[tuple[int, int], int] = {}
    for c in sorted(topo.cpus, key=lambda c: c.id):
        if c.id not in allowed:
            continue
        key = (c.socket, c.core)
        seen.setdefault(key, []).append(c.id)
        node_of.setdefault(key, c.node)
    cores = [(node_of[k], tuple(v) if use_smt else (v[0],)) for k, v in seen.items()]
    cores.sort(key=lambda nc: (nc[0], nc[1][0]))
    if topo.cgroup is not None:
        budget = max(1, math.floor(topo.cgroup.cpus))
        cores = cores[:budget]
    return cores


def layout_instances(topo: Topology, req: PlanRequest) -> tuple[Instance, ...]:
    cores = usable_cores(topo, req.use_smt)
    total = len(cores)
    by_node: dict[int, list[tuple[int, ...]]] = {}
    for node, cpus in cores:
        by_node.setdefault(node, []).append(cpus)
    if req.span_nodes:
        by_node = {-1: [cpus for _, cpus in cores]}

    n, c = req.instances, req.cores_per_instance
    if n is not None and n < 1:
        raise BadInput(f"invalid --instances {n}: must be >= 1")
    if c is not None and c < 1:
        raise BadInput(f"invalid --cores-per-instance {c}: must be >= 1")
    if n is not None and n > total:
        raise BadInput(f"invalid --instances {n}: this host allows at most {total} "
                       f"(one physical core each)")
    biggest = max(len(v) for v in by_node.values())
    if c is not None and c > biggest:
        where = "this host's usable cores" if req.span_nodes else "any NUMA node (use --span-nodes to cross nodes)"
        raise BadInput(f"invalid --cores-per-instance {c}: more than the {biggest} cores of {where}")

    if n is None and c is None:
        # Latency default: one instance on the first node's cores, never spanning nodes.
        first = min(by_node)
        groups = [(first, by_node[first])]
    else:
        if c is None:
            # The largest per-instance core count that still fits n instances.
            c = max(k for k in range(1, biggest + 1)
                    if sum(len(v) // k for v in by_node.values()) >= n)  # type: ignore[operator]
        fit = sum(len(v) // c for v in by_node.values())
        if n is None:
            n = fit
        if n > fit:
            raise BadInput(f"invalid --instances {n} with --cores-per-instance {c}: "
                           f"only {fit} such instances fit without crossing NUMA nodes")
        groups = []
        for node in sorted(by_node):
            chunk = by_node[node]
            for i in range(len(chunk) // c):
                if len(groups) == n:
                    break
                groups.append((node, chunk[i * c:(i + 1) * c]))
    out = []
    for idx, (node, core_cpus) in enumerate(groups):
        cpus = tuple(sorted(x for cc in core_cpus for x in cc))
        out.append(Instance(idx, cpus, None if node == -1 else node))
    return tuple(out)


# ---------------------------------------------------------------------------
# The rules
# ---------------------------------------------------------------------------


def has_native_bf16(topo: Topology) -> str | None:
    """The ISA feature that makes bf16 fast here, or None."""
    for flag in ("amx_bf16", "avx512_bf16"):
        if topo.has(flag):
            return flag
    return None


def ipex_prepack_supported(topo: Topology) -> bool:
    """IPEX 2.8's bf16 weight prepack asserts without AVX512-BW/VL/DQ or AVX-NE-CONVERT."""
    return all(topo.has(f) for f in ("avx512bw", "avx512vl", "avx512dq")) or topo.has("avx_ne_convert")


class _Resolver:
    """Resolves each knob: CLI override, else plan-file setting, else the topology rule."""

    def __init__(self, overrides: Mapping[str, Any], file_settings: Mapping[str, Any], source: str):
        self.overrides = dict(overrides)
        self.file = dict(file_settings)
        self.source = source
        self.values: dict[str, Any] = {}
        self.decisions: list[Decision] = []
        self.warnings: list[str] = []
        self.missing: list[str] = []

    def given(self, key: str) -> tuple[Any, str] | None:
        if key in self.overrides:
            return self.overrides[key], "override"
        if key in self.file:
            return self.file[key], self.source
        return None

    def decide(self, key: str, rule: Callable[[], tuple[Any, str]]) -> Any:
        g = self.given(key)
        if g is not None:
            value, origin = g
            reason = "set by --set/--overrides" if origin == "override" else f"from the {origin} plan file"
        else:
            value, reason = rule()
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
) -> Plan:
    """Derive the plan. Pure: everything it knows comes in through its arguments.

    `overrides` (from the user) are strict: asking for a library the host lacks
    is an error. `file_settings` (from a plan file made elsewhere) are lenient:
    what this host cannot honour falls back, with a warning and a reason.
    `instances` (a saved layout) is kept when all its CPUs are online here.
    """
    overrides = dict(overrides or {})
    r = _Resolver(overrides, file_settings or {}, source)
    online = {c.id for c in topo.cpus}
    if not instances or not all(set(i.cpus) <= online for i in instances):
        if instances:
            r.warnings.append("the plan file's instance layout names CPUs this host lacks: laid out anew")
        instances = layout_instances(topo, request)
    libs = facts.libraries

    # Library paths: facts, unless given.
    for kind in ("jemalloc", "tcmalloc", "iomp"):
        key = f"{kind}_path"
        g = r.given(key)
        r.values[key] = g[0] if g else libs.get(kind)

    def need_lib(key: str, kind: str, value: str, fallback: str, install: str) -> str:
        """Keep a library-backed choice only when its library exists."""
        if value == fallback or r.values.get(f"{kind}_path"):
            return value
        if key in overrides:
            raise BadInput(f"{key}={value} but lib{kind} was not found on this host ({install}, "
                           f"or --set {kind}_path=PATH)")
        r.missing.append(kind)
        r.warnings.append(f"{key}={value} asked by the plan file, but lib{kind} is missing here: using {fallback}")
        return fallback

    # Allocator
    def allocator_rule() -> tuple[str, str]:
        if libs.get("jemalloc") or r.values.get("jemalloc_path"):
            return "jemalloc", ("jemalloc found; the demo's first step (with libiomp5 and pinning: "
                                "32.3 s -> 11.8 s on a 32-core Sapphire Rapids)")
        r.missing.append("jemalloc")
        if libs.get("tcmalloc"):
            return "tcmalloc", "jemalloc not found (install libjemalloc2); tcmalloc found, the next best"
        return "default", "neither jemalloc nor tcmalloc found (install libjemalloc2): glibc malloc"

    alloc = r.decide("allocator", allocator_rule)
    if alloc in ("jemalloc", "tcmalloc"):
        install = "install libjemalloc2" if alloc == "jemalloc" else "install libgoogle-perftools4"
        r.values["allocator"] = need_lib("allocator", alloc, alloc, "default", install)

    r.decide("malloc_conf", lambda: (
        ("demo", "the published demo's MALLOC_CONF (long-lived decay, background purging)")
        if r.values["allocator"] == "jemalloc" else (UNSET, "only jemalloc reads MALLOC_CONF")))
    mc = r.values["malloc_conf"]
    r.values["malloc_conf"] = MALLOC_CONF_PROFILES.get(mc, mc) if mc != UNSET else None

    # OpenMP runtime
    def omp_rule() -> tuple[str, str]:
        if libs.get("iomp") or r.values.get("iomp_path"):
            return "intel", "libiomp5 found: Intel OpenMP, as in the demo's recipe"
        r.missing.append("iomp")
        return "default", "libiomp5 not found (pip install intel-openmp into the agent's venv): torch's own OpenMP"

    omp = r.decide("omp_runtime", omp_rule)
    if omp == "intel":
        r.values["omp_runtime"] = need_lib("omp_runtime", "iomp", omp, "default", "pip install intel-openmp")
    intel = r.values["omp_runtime"] == "intel"

    inst0 = instances[0]
    cores0 = len(inst0.cpus) if not request.use_smt else len({topo.cpu(c).core for c in inst0.cpus})
    cg = f" (cgroup quota {topo.cgroup.cpus:g} CPUs)" if topo.cgroup else ""
    r.decide("omp_num_threads", lambda: (
        len(inst0.cpus),
        f"one thread per {'CPU' if request.use_smt else 'physical core'} of the instance: "
        f"{cores0} core(s){cg}; SMT siblings would share a core's FPUs"))
    if r.values["omp_num_threads"] > topo.logical_cpus:
        raise BadInput(f"invalid value {r.values['omp_num_threads']} for plan setting 'omp_num_threads': "
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

    binding = r.decide("binding", binding_rule)
    if binding == "numactl" and not facts.numactl:
        if "binding" in overrides:
            raise BadInput("binding=numactl but numactl is not installed on this host")
        r.values["binding"] = "taskset" if facts.taskset else "none"
        r.warnings.append(f"binding=numactl asked, numactl missing here: using {r.values['binding']}")
    if r.values["binding"] == "taskset" and not facts.taskset:
        if "binding" in overrides:
            raise BadInput("binding=taskset but taskset is not installed on this host")
        r.values["binding"] = "none"
    multi_node = len(topo.nodes) > 1
    r.decide("membind", lambda: (
        (r.values["binding"] == "numactl" and multi_node and facts.numa_permitted and inst0.node is not None),
        "memory bound to the instance's node (several NUMA nodes, binding permitted)"
        if multi_node else "one NUMA node: nothing to bind memory to (the demo bound none)"))
    if r.values["membind"] and not facts.numa_permitted:
        if "membind" in overrides:
            raise BadInput("membind=true but this host refuses NUMA memory binding (set_mempolicy)")
        r.values["membind"] = False

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
    bf16_flag = has_native_bf16(topo)

    def precision_rule() -> tuple[str, str]:
        if bf16_flag:
            return "bf16", f"the CPU has {bf16_flag}: bf16 runs natively (the demo's 11.8 s -> 5.4 s step)"
        return "fp32", "no AMX-BF16 or AVX512-BF16: bf16 would be emulated and slower than fp32"

    prec = r.decide("precision", precision_rule)
    if prec == "bf16" and not bf16_flag:
        r.warnings.append("precision=bf16 on a CPU without AMX-BF16/AVX512-BF16: bf16 is emulated and slow here")

    def backend_rule() -> tuple[str, str]:
        if facts.ipex.usable:
            return "ipex", facts.ipex.reason
        return "native", f"{facts.ipex.reason}: upstream PyTorch (channels_last, autocast, torch.compile)"

    backend = r.decide("backend", backend_rule)
    if backend == "ipex" and not facts.ipex.usable:
        if "backend" in overrides:
            raise BadInput(f"backend=ipex is not usable here: {facts.ipex.reason}")
        r.values["backend"] = "native"
        r.warnings.append(f"backend=ipex asked by the plan file, not usable here ({facts.ipex.reason}): using native")

    r.decide("channels_last", lambda: (True, "channels_last suits oneDNN's convolution kernels (the demo's recipe)"))
    r.decide("compile", lambda: (False, "a cold torch.compile takes minutes; `sdagent tune` measures it"
                                 if r.values["backend"] == "native" else "IPEX optimizes the graph itself"))
    r.decide("weights_prepack", lambda: (
        (True, "the CPU has AVX512-BW/VL/DQ or AVX-NE-CONVERT, which IPEX's bf16 prepack needs")
        if ipex_prepack_supported(topo) else
        (False, "IPEX 2.8's bf16 weight prepack asserts without AVX512-BW/VL/DQ or AVX-NE-CONVERT")))

    settings = {k: r.values.get(k) for k in KNOBS}
    for k, v in settings.items():
        if v is None and k not in ("jemalloc_path", "tcmalloc_path", "iomp_path", "malloc_conf"):
            raise AssertionError(f"plan setting {k} left unresolved")  # a bug, not bad input
    return Plan(
        settings=settings,
        instances=instances,
        decisions=tuple(r.decisions),
        missing_libraries=tuple(dict.fromkeys(r.missing)),
        warnings=tuple(r.warnings),
        source=f"{source}+overrides" if overrides and not source.endswith("+overrides") else source,
        request=request,
        topology_summary=topo.summary(),
        numactl=facts.numactl,
        taskset=facts.taskset,
        plan_file=plan_file,
        tuning=tuning,
    )


def with_settings(plan: Plan, **changes: Any) -> Plan:
    """A copy of `plan` with some settings replaced (used by tune's candidates)."""
    return replace(plan, settings={**plan.settings, **changes})

