"""The tuning plan: topology + host facts in, settings with reasons out.

This module holds every topology-to-settings rule (:func:`make_plan`). The CLI,
`sdagent tune`, the ladder and the Ansible roles (through `sdagent plan --json`
and `sdagent env`) all get their settings from here; nothing re-derives them.

Every setting is decided once, by :meth:`_Resolver.decide` over the table of
rules in :mod:`sdagent.planning.rules`: the value given (override or plan file)
or the rule's, then what this host can honour. A
fallback (a library missing, numactl absent, IPEX unusable) happens *inside*
the decision, so the recorded decision always says the value in effect and
why: what `sdagent plan` prints and the comments of the env file cannot
disagree with the settings.

A plan is a hypothesis: `sdagent tune` measures alternatives and writes the
winner as a plan file, whose settings come back in here as `file_settings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from sdagent.errors import BadInput
from sdagent.host.software import HostFacts
from sdagent.host.topology import Topology
from sdagent.planning.layout import Instance, PlanRequest, layout_instances
from sdagent.planning.evidence import Evidence, default_evidence
from sdagent.planning.runspec import RunSpec
from sdagent.planning.rules import RULES, PlanContext, Rule
from sdagent.planning.settings import KNOBS, LIBRARY_KNOBS, MALLOC_CONF_PROFILES, UNSET

#: Settings whose right value depends on the instance layout: re-derived whenever a
#: plan is laid out anew (a plan file's 8 threads do not fit a 4-CPU instance).
LAYOUT_KEYS: tuple[str, ...] = ("omp_num_threads", "binding", "membind", "kmp_affinity", "kmp_blocktime")

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
    #: settings a plan file asked for that this host cannot honour: (key, asked, used, why); a library
    #: path the host cannot preload is one (used: the host's own copy, or None)
    fallbacks: tuple[tuple[str, Any, Any, str], ...] = ()

    # Typed accessors of the resolved settings (settings.KNOBS names and documents each).
    @property
    def allocator(self) -> str:
        return str(self.settings["allocator"])

    @property
    def malloc_conf(self) -> str:
        return str(self.settings["malloc_conf"])

    @property
    def omp_runtime(self) -> str:
        return str(self.settings["omp_runtime"])

    @property
    def omp_num_threads(self) -> int:
        return int(self.settings["omp_num_threads"])

    @property
    def kmp_affinity(self) -> str:
        return str(self.settings["kmp_affinity"])

    @property
    def kmp_blocktime(self) -> int | str:
        """Milliseconds, or settings.UNSET."""
        v = self.settings["kmp_blocktime"]
        return v if isinstance(v, int) else str(v)

    @property
    def binding(self) -> str:
        return str(self.settings["binding"])

    @property
    def membind(self) -> bool:
        return bool(self.settings["membind"])

    @property
    def precision(self) -> str:
        return str(self.settings["precision"])

    @property
    def backend(self) -> str:
        return str(self.settings["backend"])

    @property
    def channels_last(self) -> bool:
        return bool(self.settings["channels_last"])

    @property
    def compile(self) -> bool:
        return bool(self.settings["compile"])

    @property
    def compile_autotune(self) -> bool:
        return bool(self.settings["compile_autotune"])

    @property
    def vae(self) -> str:
        """full | tiny (a plan file written before the setting existed: full)."""
        return str(self.settings.get("vae", "full"))

    @property
    def quantize(self) -> str:
        """The native UNet: none | int8 (PT2E; a plan file written before the setting existed: none)."""
        return str(self.settings.get("quantize", "none"))

    @property
    def weights_prepack(self) -> bool:
        return bool(self.settings["weights_prepack"])

    @property
    def ov_num_threads(self) -> int | str:
        """INFERENCE_NUM_THREADS (backend openvino), or settings.UNSET."""
        v = self.settings["ov_num_threads"]
        return v if isinstance(v, int) else str(v)

    @property
    def ov_num_streams(self) -> int | str:
        """NUM_STREAMS (backend openvino), or settings.UNSET."""
        v = self.settings["ov_num_streams"]
        return v if isinstance(v, int) else str(v)

    @property
    def ov_performance_hint(self) -> str:
        return str(self.settings["ov_performance_hint"])

    @property
    def ov_cpu_pinning(self) -> bool:
        return bool(self.settings["ov_cpu_pinning"])

    @property
    def ov_weights(self) -> str:
        """The OpenVINO export's weights: full | int8 | int8-hybrid (backend openvino)."""
        return str(self.settings["ov_weights"])

    def library_path(self, kind: str) -> str | None:
        """The path in effect of a preloadable library (jemalloc | tcmalloc | iomp), or None."""
        return self.settings.get(LIBRARY_KNOBS[kind])

    @property
    def run_spec(self) -> RunSpec:
        """What the pipeline computes with under this plan, for the ISA it was made for."""
        return RunSpec.from_settings(self.settings, self.isa_flags)

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
            if self.settings["membind"] and inst.mem_nodes:
                argv.append(f"--membind={inst.mem_nodelist}")
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
                {"index": i.index, "cpus": i.cpulist, "cpu_ids": list(i.cpus), "node": i.node,
                 "mem_nodes": list(i.mem_nodes), "mem_node": i.mem_nodes[0] if i.mem_nodes else None,
                 "threads": self.settings["omp_num_threads"], "binding": self.settings["binding"],
                 "launcher": self.launcher(i.index), "env": self.env(i.index)}
                for i in self.instances
            ],
            "decisions": [{"key": d.key, "value": d.value, "reason": d.reason} for d in self.decisions],
            "missing_libraries": list(self.missing_libraries),
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
    if s.get("backend") == "native" and s.get("compile") and s.get("quantize") == "int8":
        parts.append("UNet int8")
    if s.get("backend") == "openvino" and s.get("ov_weights", "full") != "full":
        parts.append(f"{s.get('ov_weights')} weights")
    if s.get("vae") == "tiny":
        parts.append("tiny VAE")
    return ", ".join(str(p) for p in parts)


class _Resolver:
    """Resolves each knob: CLI override, else plan-file setting, else the topology rule; then the host."""

    def __init__(self, ctx: PlanContext, overrides: Mapping[str, Any], file_settings: Mapping[str, Any],
                 source: str):
        self.ctx = ctx
        self.overrides = dict(overrides)
        self.file = dict(file_settings)
        self.source = source
        self.decisions: list[Decision] = []
        self.warnings: list[str] = []
        self.fallbacks: list[tuple[str, Any, Any, str]] = []

    def given(self, key: str) -> tuple[Any, str] | None:
        if key in self.overrides:
            return self.overrides[key], "override"
        if key in self.file:
            return self.file[key], self.source
        return None

    def decide(self, rule: Rule) -> Any:
        """Record the value in effect: given or ruled, then what the host can honour.

        An override the host cannot honour is an error (the user asked for it
        here); a plan file's value falls back with a warning (it may come from
        another host), and the decision says both.
        """
        key, ctx = rule.key, self.ctx
        g = self.given(key)
        if g is not None:
            value, origin = g
            reason = "set by --set/--overrides" if origin == "override" else f"from the {origin} plan file"
        else:
            value, reason = rule.rule(ctx)
            origin = "rule"
        if rule.normalize is not None:
            value, note = rule.normalize(value)
            reason += note
        fallback = rule.honour(ctx, value) if rule.honour is not None else None
        if fallback is not None:
            kept, why = fallback
            if origin == "override":
                raise BadInput(f"{key}={value} but {why}")
            if origin != "rule":
                self.warnings.append(f"{key}={value} asked by the {origin} plan file, but {why}: using {kept}")
                self.fallbacks.append((key, value, kept, why))
            reason = f"{reason}: {value} asked, but {why}, so {'none' if kept is None else kept}"
            value = kept
        if rule.check is not None:
            rule.check(ctx, value)
        ctx.values[key] = value
        self.decisions.append(Decision(key, value, reason))
        if rule.warn is not None and (w := rule.warn(ctx, value)):
            self.warnings.append(w)
        return value


def _instances_for(topo: Topology, request: PlanRequest, instances: tuple[Instance, ...],
                   file_settings: dict[str, Any], warnings: list[str]) -> tuple[tuple[Instance, ...], dict[str, Any]]:
    """The saved layout when all its CPUs are online here, else laid out anew (dropping the file's
    layout-dependent settings when the layout changed)."""
    online = {c.id for c in topo.cpus}
    memory = {n.id for n in topo.nodes if n.has_memory}
    if instances and all(set(i.cpus) <= online and set(i.mem_nodes) <= memory for i in instances):
        return instances, file_settings
    if instances:
        warnings.append("the plan file's instance layout names CPUs or memory nodes this host lacks: laid out anew")
    if file_settings and any(k in file_settings for k in LAYOUT_KEYS) and (
            instances or request.instances is not None or request.cores_per_instance is not None):
        # The file's threads, binding and KMP_* were measured for another layout.
        file_settings = {k: v for k, v in file_settings.items() if k not in LAYOUT_KEYS}
    return layout_instances(topo, request), file_settings


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
    unusable_libraries: tuple[tuple[str, str, str], ...] = (),
    fallbacks: tuple[tuple[str, Any, Any, str], ...] = (),
    objective: str = "latency",
    evidence: Evidence | None = None,
) -> Plan:
    """Derive the plan: a loop over :data:`sdagent.planning.rules.RULES`. Pure: everything it knows
    comes in through its arguments (`evidence`, the measured effects of the levers per host class,
    defaults to the agent's own planning/evidence.json).

    `overrides` (from the user) are strict: asking for something the host
    cannot honour is an error. `file_settings` (from a plan file made
    elsewhere) are lenient: what this host cannot honour falls back, with a
    warning and a reason. `instances` (a saved layout) is kept when all its
    CPUs are online here; laid out anew, the layout's own settings are re-derived.
    `unusable_libraries` are (key, path, why) of the library paths a plan file named that
    this host cannot preload (planfile checks them): each is decided like any plan-file value
    this host cannot honour, the host's own copy (or none) in its place, with the reason.
    `fallbacks` are what the plan this one is made from could not honour (a plan file's,
    handed on by `sdagent exec`): they stay on record.
    """
    overrides = dict(overrides or {})
    warnings: list[str] = []
    file_settings = {**dict(file_settings or {}), **{key: path for key, path, _ in unusable_libraries}}
    instances, file_settings = _instances_for(topo, request, instances, file_settings, warnings)
    ctx = PlanContext(topo, facts, request, instances,
                      unusable_paths={path: why for _, path, why in unusable_libraries},
                      evidence=evidence or default_evidence())
    r = _Resolver(ctx, overrides, file_settings, source)
    r.warnings += warnings
    for rule in RULES:
        r.decide(rule)

    settings = {k: ctx.values.get(k) for k in KNOBS}
    for k, v in settings.items():
        if v is None and k not in LIBRARY_KNOBS.values():  # a library path is None where the host has none
            raise AssertionError(f"plan setting {k} left unresolved")  # a bug, not bad input
    return Plan(
        settings=settings,
        instances=instances,
        decisions=tuple(r.decisions),
        isa_flags=tuple(topo.flags),
        missing_libraries=tuple(dict.fromkeys(ctx.missing)),
        warnings=tuple(r.warnings),
        source=f"{source}+overrides" if overrides and not source.endswith("+overrides") else source,
        request=request,
        topology_summary=topo.summary(),
        numactl=facts.numactl,
        taskset=facts.taskset,
        plan_file=plan_file,
        tuning=tuning,
        facts=facts.to_dict(),
        fallbacks=tuple(dict.fromkeys(tuple(fallbacks) + tuple(r.fallbacks))),
        objective=objective,
    )
