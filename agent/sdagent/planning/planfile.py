"""Plan files and the plan in force: which saved plan (if any) a command works from.

A plan reaches a command three ways, most specific first: the plan `sdagent
exec` ran this process under (``SDAGENT_PLAN_JSON``, so a child `verify` checks
the very plan and layout it runs under), a plan file (``--plan-file``, from
`sdagent plan -o` or `sdagent tune -o`), or none (derived from the topology).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from sdagent.atomicio import read_json
from sdagent.errors import BadInput
from sdagent.host.software import HostFacts, unsafe_library
from sdagent.host.topology import Topology
from sdagent.envvars import PLAN_ENV
from sdagent.planning.layout import Instance, PlanRequest
from sdagent.planning.plan import Plan, make_plan
from sdagent.planning.settings import LIBRARY_KNOBS, parse_settings

PLAN_SOURCES = ("derived", "tuned", "file")
OBJECTIVES = ("latency", "throughput")


@dataclass(frozen=True)
class LoadedPlan:
    settings: dict[str, Any]
    source: str
    request: PlanRequest
    tuning: dict[str, Any] | None
    instances: tuple[Instance, ...] = ()  # the saved layout ((): derive one)
    plan_file: str | None = None
    #: library settings the file names but this host cannot preload: (key, path, why)
    unusable_libraries: tuple[tuple[str, str, str], ...] = ()
    #: what the plan this record was made from could not honour (exec hands them on to its child)
    fallbacks: tuple[tuple[str, Any, Any, str], ...] = ()
    objective: str = "latency"


def plan_env_value(plan: Plan) -> str:
    """What `sdagent exec` hands its child: the plan's reproducible part, as compact JSON."""
    d = plan.to_dict()
    keep = ("format", "source", "objective", "plan_file", "request", "settings", "instances", "tuning",
            "fallbacks")
    d = {k: d[k] for k in keep}
    d["instances"] = [{"index": i["index"], "cpu_ids": i["cpu_ids"], "node": i["node"], "mem_nodes": i["mem_nodes"]}
                      for i in d["instances"]]
    return json.dumps(d, separators=(",", ":"))


#: The plan formats this agent reads (Plan.to_dict()'s "format"); a plan without one predates the tag.
PLAN_FORMATS = ("sdagent-plan/1",)


def check_plan_format(fmt: Any, origin: str) -> None:
    """Refuse a plan written in a format this agent does not know (a newer agent's): its fields may mean
    something else, and reading it as ours would apply settings nobody planned."""
    if fmt is not None and fmt not in PLAN_FORMATS:
        raise BadInput(f"{origin}: key 'format' is {fmt!r}, this agent reads {', '.join(PLAN_FORMATS)} "
                       f"(written by another sdagent version? re-create it with `sdagent plan -o` or `tune -o`)")


def load_plan_file(path: str | os.PathLike[str]) -> LoadedPlan:
    """Read a plan file written by `sdagent plan -o` or `sdagent tune -o`; settings are re-validated."""
    p = Path(path)
    return parse_plan_data(read_json(p, "plan file"), f"plan file {p}", plan_file=str(p))


def parse_plan_data(data: Any, origin: str, plan_file: str | None = None) -> LoadedPlan:
    """Validate a plan record (a plan file's content, or exec's SDAGENT_PLAN_JSON)."""
    if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
        raise BadInput(f"{origin} has no 'settings' mapping: not an sdagent plan")
    check_plan_format(data.get("format"), origin)
    settings = dict(data["settings"])
    # A library path this host cannot preload is taken out here (the I/O edge) and handed to the
    # planner, which decides it like any plan-file value the host cannot honour: the host's own
    # copy, or none (and then the allocator's or OpenMP's fallback), with the reason.
    unusable = []
    for key in LIBRARY_KNOBS.values():
        if settings.get(key):
            why = unsafe_library(str(settings[key]))
            if why:
                unusable.append((key, str(settings.pop(key)), why))
    try:
        settings = parse_settings({k: v for k, v in settings.items() if v is not None})
        instances = tuple(_instance(i) for i in data.get("instances") or ())
        request = PlanRequest.from_dict(data.get("request"), origin)
    except BadInput as exc:
        raise BadInput(f"{origin}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"{origin}: bad 'instances' entry ({type(exc).__name__}: {exc})") from None
    for inst in instances:
        if not inst.cpus or len(set(inst.cpus)) != len(inst.cpus):
            raise BadInput(f"{origin}: instances[{inst.index}].cpu_ids "
                           + ("is empty: an instance runs on at least one CPU" if not inst.cpus
                              else f"names a CPU twice: {list(inst.cpus)}"))
    source = str(data.get("source") or "file")
    if source.removesuffix("+overrides") not in PLAN_SOURCES:
        source = "file"
    tuning = data.get("tuning")
    try:
        fallbacks = tuple((str(f["key"]), f["asked"], f["used"], str(f["why"])) for f in data.get("fallbacks") or ())
    except (KeyError, TypeError) as exc:
        raise BadInput(f"{origin}: bad 'fallbacks' entry ({exc})") from None
    objective = str(data.get("objective") or "latency")
    if objective not in OBJECTIVES:
        raise BadInput(f"{origin}: unknown objective {objective!r} (valid: {', '.join(OBJECTIVES)})")
    return LoadedPlan(settings, source, request, tuning if isinstance(tuning, dict) else None, instances,
                      plan_file or data.get("plan_file"), tuple(unusable), fallbacks, objective)


def _instance(i: Mapping[str, Any]) -> Instance:
    """One saved instance; a record from before "node"/"mem_nodes" has only "mem_node" (both at once)."""
    mem_node = i.get("mem_node")
    node = i["node"] if "node" in i else mem_node
    mem_nodes = i["mem_nodes"] if "mem_nodes" in i else ([] if mem_node is None else [mem_node])
    return Instance(int(i["index"]), tuple(int(c) for c in i["cpu_ids"]), None if node is None else int(node),
                    tuple(int(n) for n in mem_nodes))


def inherited_plan(environ: Mapping[str, str], plan_file: str | None) -> LoadedPlan | None:
    """The plan `sdagent exec` ran this process under, unless this call names a different plan file."""
    raw = environ.get(PLAN_ENV)
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BadInput(f"${PLAN_ENV} is not valid JSON: {exc}") from None
    named = isinstance(data, dict) and data.get("plan_file")
    if plan_file and not (named and os.path.abspath(str(named)) == os.path.abspath(plan_file)):
        return None
    return parse_plan_data(data, f"${PLAN_ENV} (set by sdagent exec)")


def plan_in_force(topo: Topology, facts: HostFacts, *, plan_file: str | None, environ: Mapping[str, str],
                  request: PlanRequest | None = None, overrides: Mapping[str, Any] | None = None) -> Plan:
    """The plan in force (exec's, else the plan file, else derived), then `overrides`, on this topology.

    A new layout `request` re-lays the instances (and re-derives the layout's
    settings); otherwise a saved layout stands.
    """
    loaded = inherited_plan(environ, plan_file)
    if loaded is None and plan_file:
        loaded = load_plan_file(plan_file)
    if loaded is None:
        return make_plan(topo, facts, request or PlanRequest(), overrides=overrides or {})
    keep_layout = request is None or request == loaded.request
    return make_plan(
        topo, facts, request or loaded.request,
        file_settings=loaded.settings, overrides=overrides or {}, source=loaded.source,
        plan_file=plan_file or loaded.plan_file, tuning=loaded.tuning,
        instances=loaded.instances if keep_layout else (),
        unusable_libraries=loaded.unusable_libraries, fallbacks=loaded.fallbacks, objective=loaded.objective,
    )
