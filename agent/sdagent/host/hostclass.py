"""Host classes: the fingerprint of what decides a host's speed, so identical hosts share one plan.

Two hosts with the same :class:`HostClass` id get the same measured plan: `sdagent tune` runs on one
host per class and the others install its plan. The fingerprint holds only what changes the speed of
the same workload under the same plan:

- the CPU: vendor, model name, family/model, the ISA flags the kernels dispatch on (``ISA_FLAGS``);
- the layout the plan's threads see: sockets, physical cores per socket, SMT threads per core,
  E-cores of a hybrid CPU, the NUMA nodes (physical cores and logical CPUs each, memory each
  rounded, see :func:`memory_gib`), the CPUs this process may use (cpuset), the isolated CPUs,
  the cgroup CPU quota (CFS bandwidth) in CPUs and what bounds the CPUs (host, cpuset, quota);
- the software: torch, OpenVINO and IPEX versions and the agent's own version.

It leaves out what does not (hostname, CPU ids, how the topology was read, the exact kB of
MemTotal, which differ between otherwise identical hosts).

Pure: :func:`host_class` takes a topology and a :class:`Software` record; :func:`installed_software`
is the one I/O edge (package metadata, no import of torch). The id is the first 12 hex digits of the
SHA-256 of the record's canonical JSON (sorted keys, no whitespace): 48 bits, so a collision among a
fleet's few classes is out of reach, and the id is stable across runs, Python versions and hosts.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from sdagent.host.topology import Topology

#: The record's format; bump it when a field is added or its meaning changes (every id changes too).
HOSTCLASS_FORMAT = "sdagent-hostclass/1"

#: Hex digits of the SHA-256 kept in the id: 48 bits.
ID_HEX_DIGITS = 12

#: Memory per NUMA node is rounded *up* to a multiple of this many GiB. MemTotal is the installed
#: memory less what the firmware and kernel reserve (1-3%), and that reservation differs between
#: identical hosts by a few MiB; rounding up to 8 GiB recovers the installed size of the usual DIMM
#: layouts (a 256 GiB node reads ~251 GiB, a 24 GiB VM ~23.4 GiB, a 128 GiB one ~125 GiB).
MEM_ROUND_GIB = 8

#: The cgroup quota in CPUs is kept to this many decimals (quota/period: 250000/100000 = 2.5).
QUOTA_DECIMALS = 2


@dataclass(frozen=True)
class Software:
    """The versions that change speed: None where the package is not installed."""

    torch: str | None = None
    openvino: str | None = None
    ipex: str | None = None
    sdagent: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Software":
        return cls(**{k: (None if d.get(k) is None else str(d[k])) for k in ("torch", "openvino", "ipex", "sdagent")})


@dataclass(frozen=True)
class NodeClass:
    """One NUMA node as the class sees it: how many cores and CPUs, how much memory (GiB, rounded)."""

    physical_cores: int
    logical_cpus: int
    mem_gib: int | None


@dataclass(frozen=True)
class HostClass:
    """The class fingerprint: a frozen, versioned record; :attr:`id` names it."""

    vendor: str
    model_name: str
    family: int | None
    model: int | None
    isa_flags: tuple[str, ...]  # sorted, the subset of topology.ISA_FLAGS the CPU has
    isa_class: str  # amx | avx512_bf16 | avx512 | avx2 | baseline (see isa_class())
    sockets: int
    cores_per_socket: int
    threads_per_core: int  # SMT: 2 with Hyper-Threading/SMT on, 1 without
    e_cores: int  # physical E-cores of a hybrid CPU (0: all cores alike)
    nodes: tuple[NodeClass, ...]
    allowed_cpus: int  # the cpuset: how many CPUs this process may run on
    isolated_cpus: int  # CPUs the operator reserved (isolcpus=, nohz_full=)
    cgroup_cpus: float | None  # the CFS quota in CPUs, None when unlimited
    cpu_budget: str  # host | cpuset | quota (host.topology.Topology.cpu_budget)
    software: Software
    format: str = HOSTCLASS_FORMAT

    def canonical_json(self) -> str:
        """The bytes the id hashes: sorted keys, no whitespace, ASCII."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    @property
    def id(self) -> str:
        """First ``ID_HEX_DIGITS`` hex digits of the SHA-256 of :meth:`canonical_json`."""
        return hashlib.sha256(self.canonical_json().encode("ascii")).hexdigest()[:ID_HEX_DIGITS]

    def describe(self) -> str:
        """One line for people: ISA class, cores, layout, budget, torch."""
        smt = f"x{self.threads_per_core} SMT" if self.threads_per_core > 1 else "no SMT"
        quota = f", quota {self.cgroup_cpus:g} CPUs" if self.cgroup_cpus is not None else ""
        return (f"{self.isa_class}, {self.sockets}x{self.cores_per_socket} cores ({smt}), "
                f"{len(self.nodes)} NUMA node(s), {self.allowed_cpus} CPUs allowed{quota}; "
                f"torch {self.software.torch or 'absent'}")

    def to_dict(self) -> dict[str, Any]:
        """The record plus its id and description (what `sdagent topology --json` prints)."""
        return {"id": self.id, "description": self.describe(), **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HostClass":
        """Inverse of :meth:`to_dict`; `id` and `description` are recomputed, not read. KeyError/TypeError
        on a record that is not one."""
        return cls(
            vendor=str(d["vendor"]), model_name=str(d["model_name"]), family=d["family"], model=d["model"],
            isa_flags=tuple(d["isa_flags"]), isa_class=str(d["isa_class"]), sockets=int(d["sockets"]),
            cores_per_socket=int(d["cores_per_socket"]), threads_per_core=int(d["threads_per_core"]),
            e_cores=int(d["e_cores"]),
            nodes=tuple(NodeClass(int(n["physical_cores"]), int(n["logical_cpus"]), n["mem_gib"])
                        for n in d["nodes"]),
            allowed_cpus=int(d["allowed_cpus"]), isolated_cpus=int(d["isolated_cpus"]),
            cgroup_cpus=d["cgroup_cpus"], cpu_budget=str(d["cpu_budget"]),
            software=Software.from_dict(d["software"]), format=str(d.get("format", HOSTCLASS_FORMAT)),
        )


def isa_class(flags: tuple[str, ...] | set[str] | frozenset[str]) -> str:
    """The ISA class the evidence is kept by, best first.

    amx: AMX-BF16 (bf16 matrix tiles; Sapphire Rapids and later); avx512_bf16: AVX512-BF16 without AMX
    (Cooper Lake, Zen 4/5); avx512: AVX-512F without native bf16 (Skylake-SP to Ice Lake); avx2: AVX2
    without AVX-512 (Zen 1-3, Haswell to Coffee Lake); baseline: none of these.
    """
    have = set(flags)
    if "amx_bf16" in have:
        return "amx"
    if "avx512_bf16" in have:
        return "avx512_bf16"
    if "avx512f" in have:
        return "avx512"
    if "avx2" in have:
        return "avx2"
    return "baseline"


def memory_gib(kb: int | None) -> int | None:
    """MemTotal in kB rounded up to a multiple of ``MEM_ROUND_GIB`` GiB; 0 for a memoryless node; None
    when unknown."""
    if kb is None or kb < 0:
        return None
    if kb == 0:
        return 0
    return int(math.ceil(kb / (1024 * 1024) / MEM_ROUND_GIB) * MEM_ROUND_GIB)


def host_class(topo: Topology, software: Software) -> HostClass:
    """The class of a host from its topology and its software versions. Pure."""
    cores_per_socket = max(1, topo.physical_cores // topo.sockets)
    by_id = {c.id: c for c in topo.cpus}
    nodes = []
    for n in sorted(topo.nodes, key=lambda n: n.id):
        online = [by_id[c] for c in n.cpus if c in by_id]
        cores = {(c.socket, c.core) for c in online}
        nodes.append(NodeClass(len(cores), len(online), memory_gib(n.mem_total_kb)))
    if len(nodes) == 1 and nodes[0].mem_gib is None:
        nodes = [NodeClass(nodes[0].physical_cores, nodes[0].logical_cpus, memory_gib(topo.mem_total_kb))]
    quota = round(topo.cgroup.cpus, QUOTA_DECIMALS) if topo.cgroup else None
    return HostClass(
        vendor=topo.vendor, model_name=" ".join(topo.model_name.split()), family=topo.family, model=topo.model,
        isa_flags=tuple(sorted(topo.flags)), isa_class=isa_class(topo.flags), sockets=topo.sockets,
        cores_per_socket=cores_per_socket, threads_per_core=topo.threads_per_core,
        e_cores=len({(c.socket, c.core) for c in topo.cpus if c.kind == "E"}), nodes=tuple(nodes),
        allowed_cpus=len(topo.allowed_cpus), isolated_cpus=len(topo.isolated_cpus), cgroup_cpus=quota,
        cpu_budget=topo.cpu_budget, software=software,
    )


def installed_software() -> Software:
    """The versions installed beside this agent (package metadata: nothing is imported)."""
    from sdagent import __version__
    from sdagent.host.software import package_version

    return Software(
        torch=package_version("torch"),
        openvino=package_version("openvino"),
        ipex=package_version("intel-extension-for-pytorch") or package_version("intel_extension_for_pytorch"),
        sdagent=__version__,
    )
