"""Instances on cores: how a host's usable physical cores are split between serving processes.

Pure: a topology and a request in, instances out. The usable cores are the
allowed ones less the isolated CPUs (isolcpus=/nohz_full=) and, on a hybrid CPU,
less the E-cores (unless asked: `e_cores`), one CPU per physical core unless
asked (`use_smt`); a cgroup CPU quota caps how many are used.

The default latency instance is one whole socket with memory: on a host with
sub-NUMA clustering (SNC, NPS) that is several NUMA nodes, whose memory it binds
together (numactl --membind=a,b allocates from the nearest of them). `sub_node`
asks for one NUMA node instead (a tune axis). Several instances never cross a
NUMA node unless asked (`span_nodes`). An instance on a node without memory binds
to the nearest node with memory (the kernel's distance table), or to none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from sdagent.errors import BadInput
from sdagent.host.topology import Topology, format_cpulist


@dataclass(frozen=True)
class PlanRequest:
    """What the user asked of the layout (CLI options)."""

    instances: int | None = None
    cores_per_instance: int | None = None
    span_nodes: bool = False  # allow an instance to cross NUMA nodes
    use_smt: bool = False  # use SMT siblings as extra threads
    sub_node: bool = False  # latency instance on one NUMA node (an SNC/NPS domain), not the whole socket
    e_cores: bool = False  # use a hybrid CPU's E-cores too (default: P-cores only)

    def to_dict(self) -> dict[str, Any]:
        return {"instances": self.instances, "cores_per_instance": self.cores_per_instance,
                "span_nodes": self.span_nodes, "use_smt": self.use_smt, "sub_node": self.sub_node,
                "e_cores": self.e_cores}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, origin: str = "plan") -> "PlanRequest":
        d = d or {}

        def count(key: str) -> int | None:
            v = d.get(key)
            if v is None:
                return None
            if isinstance(v, bool) or not isinstance(v, int):
                raise BadInput(f"{origin}: request.{key} must be an integer or null, got {v!r}")
            return v

        return cls(count("instances"), count("cores_per_instance"),
                   bool(d.get("span_nodes", False)), bool(d.get("use_smt", False)),
                   bool(d.get("sub_node", False)), bool(d.get("e_cores", False)))


@dataclass(frozen=True)
class Instance:
    index: int
    cpus: tuple[int, ...]
    node: int | None  # NUMA node the instance's CPUs are on (None when they span nodes)
    #: the nodes its memory may be bound to (numactl --membind): its own nodes with memory, else the
    #: nearest node(s) with memory; () binds nothing
    mem_nodes: tuple[int, ...] = ()

    @property
    def cpulist(self) -> str:
        return format_cpulist(self.cpus)

    @property
    def mem_nodelist(self) -> str:
        return ",".join(str(n) for n in self.mem_nodes)


def usable_cores(topo: Topology, use_smt: bool = False, e_cores: bool = False) -> list[tuple[int, tuple[int, ...]]]:
    """(node, cpus) per physical core this process may use, in node then CPU order.

    A core counts when at least one of its usable threads is allowed (isolated CPUs left out
    unless nothing else is allowed; a hybrid CPU's E-cores left out unless `e_cores` or nothing
    else); by default only its first thread is used (one OpenMP thread per physical core).
    A cgroup CPU quota caps the number of cores (floor of the quota, at least 1).
    """
    allowed = set(topo.usable_cpus)
    if topo.hybrid and not e_cores and any(topo.cpu(c).kind == "P" for c in allowed):
        allowed = {c for c in allowed if topo.cpu(c).kind != "E"}
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


def _instance(topo: Topology, idx: int, core_cpus: list[tuple[int, ...]], node: int | None,
              mem_nodes: tuple[int, ...] | None = None) -> Instance:
    cpus = tuple(sorted(x for cc in core_cpus for x in cc))
    if mem_nodes is None:
        mem_nodes = topo.nearest_memory_nodes(node) if node is not None else ()
    return Instance(idx, cpus, node, mem_nodes)


def _latency_instance(topo: Topology, req: PlanRequest,
                      cores: list[tuple[int, tuple[int, ...]]]) -> Instance:
    """The default single instance: the first socket (or, with sub_node, NUMA node) with memory."""
    if req.span_nodes:
        return _instance(topo, 0, [c for _, c in cores], None, ())
    mem_nodes = {n.id for n in topo.nodes if n.has_memory}
    if req.sub_node:
        groups: dict[int, list[tuple[int, tuple[int, ...]]]] = {}
        for node, cpus in cores:
            groups.setdefault(node, []).append((node, cpus))
    else:
        groups = {}
        for node, cpus in cores:
            groups.setdefault(topo.cpu(cpus[0]).socket, []).append((node, cpus))
    key = next((k for k in sorted(groups) if {n for n, _ in groups[k]} & mem_nodes), min(groups))
    chosen = groups[key]
    nodes = sorted({n for n, _ in chosen})
    own = tuple(n for n in nodes if n in mem_nodes)
    mem = own or topo.nearest_memory_nodes(nodes[0])
    return _instance(topo, 0, [c for _, c in chosen], nodes[0] if len(nodes) == 1 else None, mem)


def layout_instances(topo: Topology, req: PlanRequest) -> tuple[Instance, ...]:
    cores = usable_cores(topo, req.use_smt, req.e_cores)
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
        return (_latency_instance(topo, req, cores),)
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
    groups: list[tuple[int, list[tuple[int, ...]]]] = []
    for node in sorted(by_node):
        chunk = by_node[node]
        for i in range(len(chunk) // c):
            if len(groups) == n:
                break
            groups.append((node, chunk[i * c:(i + 1) * c]))
    return tuple(_instance(topo, idx, core_cpus, None if node == -1 else node, () if node == -1 else None)
                 for idx, (node, core_cpus) in enumerate(groups))


def instance_physical_cores(topo: Topology, cpus: tuple[int, ...]) -> int:
    """Distinct physical cores among an instance's CPUs (what targets' core bounds mean)."""
    cores = set()
    for c in cpus:
        try:
            cpu = topo.cpu(c)
            cores.add((cpu.socket, cpu.core))
        except KeyError:  # a CPU the topology does not describe counts as its own core
            cores.add((-1, c))
    return len(cores)


def throughput_layouts(topo: Topology) -> list[dict[str, Any]]:
    """The instance splits worth measuring for throughput: every even split of the largest NUMA node's
    usable cores into instances that stay on their node, with SMT siblings as extra threads where the
    CPU has them (PlanRequest fields, largest instances first)."""
    per_node: dict[int, int] = {}
    for node, _ in usable_cores(topo):
        per_node[node] = per_node.get(node, 0) + 1
    biggest = max(per_node.values())
    out: list[dict[str, Any]] = []
    for smt in ((False, True) if topo.threads_per_core > 1 else (False,)):
        for c in sorted((d for d in range(1, biggest + 1) if biggest % d == 0), reverse=True):
            n = sum(v // c for v in per_node.values())
            out.append(PlanRequest(n, c, False, smt).to_dict())
    return out


def latency_layouts(topo: Topology) -> list[dict[str, Any]]:
    """The alternatives to the default latency instance worth measuring (PlanRequest fields): one
    NUMA node instead of the socket where SNC/NPS splits a socket, and P-cores + E-cores on a hybrid
    CPU. The default is the safe choice; `sdagent tune` measures these."""
    out: list[dict[str, Any]] = []
    nodes_with_cores: dict[int, set[int]] = {}
    for node, cpus in usable_cores(topo):
        nodes_with_cores.setdefault(topo.cpu(cpus[0]).socket, set()).add(node)
    if any(len(v) > 1 for v in nodes_with_cores.values()):
        out.append(PlanRequest(sub_node=True).to_dict())
    if topo.hybrid:
        out.append(PlanRequest(e_cores=True).to_dict())
    return out
