"""Host topology: what the tuning plan is derived from.

Everything is read from /proc and /sys under a *root* directory, so tests (and
`--sysroot`) can point the reader at a fixture tree. The result is a frozen
record that serialises to JSON and back: `--topology-file` injects one, which is
how the Molecule fleet gives each container a different host shape.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from sdagent.atomicio import read_json
from sdagent.errors import BadInput

#: The ISA flags that decide precision and kernels (names as in /proc/cpuinfo).
ISA_FLAGS: tuple[str, ...] = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512dq",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "avx_ne_convert",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
)


#: The flags that make bf16 matrix work native (not emulated), best first.
NATIVE_BF16_FLAGS: tuple[str, ...] = ("amx_bf16", "avx512_bf16")


def native_bf16_flag(flags: Iterable[str]) -> str | None:
    """The ISA feature that makes bf16 fast with these CPU flags, or None (bf16 would be emulated)."""
    have = set(flags)
    return next((f for f in NATIVE_BF16_FLAGS if f in have), None)


def parse_cpulist(text: str) -> tuple[int, ...]:
    """Parse the kernel's list format ("0-3,8,10-11") into sorted CPU ids."""
    out: set[int] = set()
    text = text.strip()
    if not text:
        return ()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?(?::(\d+))?", part)
        if not m:
            raise ValueError(f"bad cpu list element {part!r}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        step = int(m.group(3)) if m.group(3) else 1
        out.update(range(lo, hi + 1, step))
    return tuple(sorted(out))


def format_cpulist(cpus: Iterable[int]) -> str:
    """Inverse of :func:`parse_cpulist`, with ranges collapsed ("0-3,8")."""
    ids = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(parts)


@dataclass(frozen=True)
class Cpu:
    """One logical CPU and where it sits."""

    id: int
    socket: int
    core: int  # core id, unique within its socket
    node: int  # NUMA node (0 where the host has no NUMA information)
    siblings: tuple[int, ...]  # SMT siblings, itself included
    #: core type on a hybrid CPU: "P" (performance, /sys/devices/cpu_core) or "E" (efficiency,
    #: /sys/devices/cpu_atom, or a lower cpu_capacity); "" where all cores are alike
    kind: str = ""


@dataclass(frozen=True)
class NumaNode:
    """One NUMA node: its online CPUs, its memory (0: a memoryless node; None: unknown) and its
    row of the kernel's distance table (node/nodeN/distance; 10 = local, indexed by node order)."""

    id: int
    cpus: tuple[int, ...]
    mem_total_kb: int | None = None
    distances: tuple[int, ...] = ()

    @property
    def has_memory(self) -> bool:
        """numactl --membind refuses a node without memory ("<N> is invalid"); unknown counts as memory."""
        return self.mem_total_kb is None or self.mem_total_kb > 0


@dataclass(frozen=True)
class CgroupLimit:
    """CPU bandwidth limit of this process's cgroup, as a number of CPUs."""

    version: int  # 1 or 2
    quota_us: int
    period_us: int

    @property
    def cpus(self) -> float:
        return self.quota_us / self.period_us


@dataclass(frozen=True)
class Topology:
    """What the plan needs to know about a host."""

    vendor: str
    model_name: str
    family: int | None
    model: int | None
    flags: tuple[str, ...]  # the subset of ISA_FLAGS the CPU has
    cpus: tuple[Cpu, ...]  # online logical CPUs
    nodes: tuple[NumaNode, ...]
    allowed_cpus: tuple[int, ...]  # sched_getaffinity of this process
    cgroup: CgroupLimit | None = None
    mem_total_kb: int | None = None
    source: str = "detected"  # "detected", "sysroot:<dir>" or "file:<path>"
    hostname: str = ""
    #: CPUs the operator reserved (isolcpus=, nohz_full=: /sys/devices/system/cpu/isolated, nohz_full)
    isolated_cpus: tuple[int, ...] = ()

    # -- derived facts -------------------------------------------------------
    def has(self, flag: str) -> bool:
        return flag in self.flags

    @property
    def sockets(self) -> int:
        return len({c.socket for c in self.cpus}) or 1

    @property
    def logical_cpus(self) -> int:
        return len(self.cpus)

    @property
    def physical_cores(self) -> int:
        return len({(c.socket, c.core) for c in self.cpus})

    @property
    def threads_per_core(self) -> int:
        return max((len(c.siblings) for c in self.cpus), default=1)

    @property
    def native_bf16(self) -> str | None:
        return native_bf16_flag(self.flags)

    @property
    def hybrid(self) -> bool:
        """P-cores and E-cores (12th-gen Core and later)."""
        return {c.kind for c in self.cpus} >= {"P", "E"}

    @property
    def usable_cpus(self) -> tuple[int, ...]:
        """The allowed CPUs, less the isolated ones unless the mask holds nothing else."""
        rest = tuple(c for c in self.allowed_cpus if c not in set(self.isolated_cpus))
        return rest or self.allowed_cpus

    @property
    def cpu_budget(self) -> str:
        """What bounds this process's CPUs: "quota" (a CFS quota smaller than its CPU mask: the mask is
        shared, not owned), "cpuset" (a mask narrower than the host's usable CPUs, no smaller quota), or
        "host" (every CPU, no quota)."""
        usable = self.usable_cpus
        if self.cgroup is not None and self.cgroup.cpus < len(usable):
            return "quota"
        host = {c.id for c in self.cpus} - set(self.isolated_cpus)
        return "cpuset" if set(usable) < host else "host"

    def node(self, node_id: int) -> NumaNode:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def distance(self, a: int, b: int) -> int:
        """The kernel's distance from node a to node b (10 local, 20 remote where unknown)."""
        if a == b:
            return 10
        ids = [n.id for n in self.nodes]
        row = self.node(a).distances
        return row[ids.index(b)] if len(row) == len(ids) else 20

    def nearest_memory_nodes(self, node_id: int) -> tuple[int, ...]:
        """Node `node_id` when it has memory, else the nearest node(s) with memory by the distance
        table (every node at the least distance), else ()."""
        if self.node(node_id).has_memory:
            return (node_id,)
        mem = [n.id for n in self.nodes if n.has_memory]
        if not mem:
            return ()
        best = min(self.distance(node_id, m) for m in mem)
        return tuple(m for m in mem if self.distance(node_id, m) == best)

    def socket_nodes(self) -> dict[int, tuple[int, ...]]:
        """socket -> the NUMA nodes whose CPUs sit on it (SNC/NPS split a socket into several)."""
        out: dict[int, set[int]] = {}
        for c in self.cpus:
            out.setdefault(c.socket, set()).add(c.node)
        return {s: tuple(sorted(v)) for s, v in sorted(out.items())}

    def cpu(self, cpu_id: int) -> Cpu:
        for c in self.cpus:
            if c.id == cpu_id:
                return c
        raise KeyError(cpu_id)

    def summary(self) -> str:
        lim = f", cgroup {self.cgroup.cpus:g} CPUs" if self.cgroup else ""
        extra = ""
        if self.hybrid:
            extra += f", {len({(c.socket, c.core) for c in self.cpus if c.kind == 'P'})} P-cores + " \
                     f"{len({(c.socket, c.core) for c in self.cpus if c.kind == 'E'})} E-cores"
        memless = [n.id for n in self.nodes if not n.has_memory]
        if memless:
            extra += f", memoryless node(s) {format_cpulist(memless)}"
        if self.isolated_cpus:
            extra += f", isolated CPUs {format_cpulist(self.isolated_cpus)}"
        return (
            f"{self.model_name}: {self.sockets} socket(s), {self.physical_cores} cores, "
            f"{self.logical_cpus} CPUs, {len(self.nodes)} NUMA node(s){extra}, "
            f"{len(self.allowed_cpus)} allowed{lim}; ISA {' '.join(self.flags) or 'none'}"
        )

    # -- (de)serialisation --------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["summary"] = {
            "sockets": self.sockets,
            "physical_cores": self.physical_cores,
            "logical_cpus": self.logical_cpus,
            "threads_per_core": self.threads_per_core,
            "numa_nodes": len(self.nodes),
            "allowed_cpus": format_cpulist(self.allowed_cpus),
            "cgroup_cpus": self.cgroup.cpus if self.cgroup else None,
            "cpu_budget": self.cpu_budget,
            "isolated_cpus": format_cpulist(self.isolated_cpus),
            "usable_cpus": format_cpulist(self.usable_cpus),
            "core_types": {k: format_cpulist(c.id for c in self.cpus if c.kind == k) for k in ("P", "E")}
            if self.hybrid else None,
            "memory_per_node_kb": {str(n.id): n.mem_total_kb for n in self.nodes},
            "memoryless_nodes": [n.id for n in self.nodes if not n.has_memory],
            "socket_nodes": {str(k): list(v) for k, v in self.socket_nodes().items()},
        }
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "file") -> "Topology":
        try:
            cpus = tuple(
                Cpu(int(c["id"]), int(c["socket"]), int(c["core"]), int(c["node"]),
                    tuple(int(s) for s in c["siblings"]), str(c.get("kind") or ""))
                for c in d["cpus"]
            )
            nodes = tuple(
                NumaNode(int(n["id"]), tuple(int(x) for x in n["cpus"]), n.get("mem_total_kb"),
                         tuple(int(x) for x in n.get("distances") or ()))
                for n in d["nodes"]
            )
            cg = d.get("cgroup")
            cgroup = (
                CgroupLimit(int(cg["version"]), int(cg["quota_us"]), int(cg["period_us"]))
                if cg else None
            )
            allowed = tuple(int(x) for x in d.get("allowed_cpus") or [c.id for c in cpus])
            if not cpus:
                raise ValueError("'cpus' is empty: a host has at least one CPU")
            twice = _duplicates([c.id for c in cpus])
            if twice:
                raise ValueError(f"'cpus' lists CPU {twice[0]} twice: each logical CPU once")
            for n in nodes:
                twice = _duplicates(list(n.cpus))
                if twice:
                    raise ValueError(f"'nodes' id {n.id} lists CPU {twice[0]} twice")
            twice = _duplicates(list(allowed))
            if twice:
                raise ValueError(f"'allowed_cpus' lists CPU {twice[0]} twice")
            if cgroup is not None and (cgroup.period_us <= 0 or cgroup.quota_us <= 0):
                raise ValueError(f"cgroup quota {cgroup.quota_us} / period {cgroup.period_us}: both must be > 0")
            if not set(allowed) <= {c.id for c in cpus}:
                raise ValueError("'allowed_cpus' names CPUs that are not in 'cpus'")
            return cls(
                vendor=str(d.get("vendor", "")),
                model_name=str(d.get("model_name", "")),
                family=d.get("family"),
                model=d.get("model"),
                flags=tuple(f for f in ISA_FLAGS if f in set(d.get("flags", ()))),
                cpus=cpus,
                nodes=nodes,
                allowed_cpus=allowed,
                cgroup=cgroup,
                mem_total_kb=d.get("mem_total_kb"),
                source=source,
                hostname=str(d.get("hostname", "")),
                isolated_cpus=tuple(int(x) for x in d.get("isolated_cpus") or ()),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInput(f"not a topology record ({type(exc).__name__}: {exc})") from None


def _duplicates(ids: list[int]) -> list[int]:
    """The ids given more than once, in order."""
    seen: set[int] = set()
    return [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]


def load_topology_file(path: str | os.PathLike[str]) -> Topology:
    p = Path(path)
    data = read_json(p, "topology file")
    if not isinstance(data, dict):
        raise BadInput(f"topology file {p} is not a JSON object")
    try:
        return Topology.from_dict(data, source=f"file:{p}")
    except BadInput as exc:
        raise BadInput(f"topology file {p}: {exc}") from None


# ---------------------------------------------------------------------------
# Reading a live host or a fixture tree
# ---------------------------------------------------------------------------


class _Tree:
    """Reads files under a root; missing files read as None."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def read(self, rel: str) -> str | None:
        try:
            return self.path(rel).read_text()
        except (FileNotFoundError, NotADirectoryError, PermissionError, IsADirectoryError):
            return None
        except OSError:
            return None

    def read_cpulist(self, rel: str) -> tuple[int, ...]:
        """A CPU list file; absent, empty or not a list (nohz_full reads "(null)" when off) is ()."""
        try:
            return parse_cpulist(self.read(rel) or "")
        except ValueError:
            return ()

    def read_int(self, rel: str) -> int | None:
        text = self.read(rel)
        try:
            return int(text.strip()) if text is not None else None
        except ValueError:
            return None


def _parse_cpuinfo(text: str) -> list[dict[str, str]]:
    blocks: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if cur:
                blocks.append(cur)
                cur = {}
            continue
        key, _, val = line.partition(":")
        cur[key.strip()] = val.strip()
    if cur:
        blocks.append(cur)
    return [b for b in blocks if "processor" in b]


def _meminfo_kb(text: str | None, key: str = "MemTotal") -> int | None:
    if not text:
        return None
    m = re.search(rf"{key}:\s+(\d+)\s*kB", text)
    return int(m.group(1)) if m else None


def _read_cgroup(tree: _Tree) -> CgroupLimit | None:
    """The tightest CPU quota on the path from this process's cgroup up to the root."""
    own = tree.read("proc/self/cgroup") or ""
    best: CgroupLimit | None = None

    def consider(lim: CgroupLimit) -> None:
        nonlocal best
        if best is None or lim.cpus < best.cpus:
            best = lim

    def ancestors(base: str, rel: str) -> list[str]:
        parts = [p for p in rel.strip("/").split("/") if p]
        out = []
        for i in range(len(parts), -1, -1):
            out.append("/".join([base] + parts[:i]))
        return out

    v2_path = "/"
    v1_path = "/"
    for line in own.splitlines():
        hid, _, rest = line.partition(":")
        ctrls, _, path = rest.partition(":")
        if hid == "0" and ctrls == "":
            v2_path = path or "/"
        elif "cpu" in ctrls.split(","):
            v1_path = path or "/"

    # cgroup v2 (unified)
    for d in ancestors("sys/fs/cgroup", v2_path):
        text = tree.read(f"{d}/cpu.max")
        if text:
            quota, _, period = text.strip().partition(" ")
            if quota != "max" and quota.isdigit() and period.isdigit() and int(period) > 0:
                consider(CgroupLimit(2, int(quota), int(period)))
    # cgroup v1
    for mount in ("sys/fs/cgroup/cpu,cpuacct", "sys/fs/cgroup/cpu"):
        for d in ancestors(mount, v1_path):
            quota = tree.read_int(f"{d}/cpu.cfs_quota_us")
            period = tree.read_int(f"{d}/cpu.cfs_period_us")
            if quota is not None and period and quota > 0:
                consider(CgroupLimit(1, quota, period))
        if tree.path(mount).exists():
            break
    return best


def _core_kinds(tree: _Tree, online: tuple[int, ...]) -> dict[int, str]:
    """cpu -> "P" | "E" on a hybrid CPU, {} otherwise.

    Source: the kernel's hybrid PMU devices (/sys/devices/cpu_core/cpus, /sys/devices/cpu_atom/cpus,
    Intel 12th-gen Core and later); else per-CPU cpu_capacity (arm64 big.LITTLE and recent x86
    kernels): the highest capacity is P, lower ones E.
    """
    p = tree.read_cpulist("sys/devices/cpu_core/cpus")
    e = tree.read_cpulist("sys/devices/cpu_atom/cpus")
    if p and e:
        return {**{c: "P" for c in p}, **{c: "E" for c in e}}
    caps = {c: tree.read_int(f"sys/devices/system/cpu/cpu{c}/cpu_capacity") for c in online}
    known = {c: v for c, v in caps.items() if v is not None}
    if len(known) == len(online) and len(set(known.values())) > 1:
        top = max(known.values())
        return {c: "P" if v == top else "E" for c, v in known.items()}
    return {}


def _read_nodes(tree: _Tree, online: tuple[int, ...]) -> list[NumaNode]:
    """NUMA nodes from sys/devices/system/node (cpulist, meminfo's MemTotal, distance); one node
    holding every CPU and the host's memory where the kernel shows none."""
    nodes: list[NumaNode] = []
    node_dir = tree.path("sys/devices/system/node")
    if node_dir.is_dir():
        for entry in sorted(node_dir.iterdir(), key=lambda p: p.name):
            m = re.fullmatch(r"node(\d+)", entry.name)
            if not m:
                continue
            base = f"sys/devices/system/node/{entry.name}"
            cpus = parse_cpulist(tree.read(f"{base}/cpulist") or "")
            mem = _meminfo_kb(tree.read(f"{base}/meminfo"), "MemTotal")
            dist = tuple(int(x) for x in (tree.read(f"{base}/distance") or "").split() if x.isdigit())
            nodes.append(NumaNode(int(m.group(1)), tuple(c for c in cpus if c in online), mem, dist))
    nodes.sort(key=lambda n: n.id)
    return nodes or [NumaNode(0, tuple(online), _meminfo_kb(tree.read("proc/meminfo")))]


def _read_cpus(tree: _Tree, online: tuple[int, ...], by_proc: dict[int, dict[str, str]],
               node_of: dict[int, int]) -> list[Cpu]:
    """Each online CPU's socket, core, node, SMT siblings and core type (sysfs, else /proc/cpuinfo)."""
    cpus: list[Cpu] = []
    for cid in online:
        base = f"sys/devices/system/cpu/cpu{cid}/topology"
        info = by_proc.get(cid, {})
        socket = tree.read_int(f"{base}/physical_package_id")
        if socket is None:
            socket = int(info.get("physical id", 0) or 0)
        core = tree.read_int(f"{base}/core_id")
        if core is None:
            core = int(info.get("core id", cid) or cid)
        sib_text = tree.read(f"{base}/thread_siblings_list")
        siblings = parse_cpulist(sib_text) if sib_text else ()
        cpus.append(Cpu(cid, socket, core, node_of.get(cid, 0), siblings))
    # Where sysfs gave no sibling lists, derive them from (socket, core).
    groups: dict[tuple[int, int], list[int]] = {}
    for c in cpus:
        groups.setdefault((c.socket, c.core), []).append(c.id)
    kinds = _core_kinds(tree, online)
    return [Cpu(c.id, c.socket, c.core, c.node, c.siblings or tuple(groups[(c.socket, c.core)]),
                kinds.get(c.id, "")) for c in cpus]


def _read_allowed(tree: _Tree, live: bool, online: tuple[int, ...]) -> tuple[int, ...]:
    """This process's affinity mask (sched_getaffinity live, Cpus_allowed_list in a fixture)."""
    if live and hasattr(os, "sched_getaffinity"):
        allowed = tuple(sorted(os.sched_getaffinity(0)))
    else:
        status = tree.read("proc/self/status") or ""
        m = re.search(r"^Cpus_allowed_list:\s*(\S+)", status, re.M)
        allowed = parse_cpulist(m.group(1)) if m else tuple(online)
    return tuple(c for c in allowed if c in set(online)) or tuple(online)


def read_topology(root: str | os.PathLike[str] = "/") -> Topology:
    """Detect the topology of the host (root="/") or of a fixture tree."""
    tree = _Tree(root)
    live = Path(root).resolve() == Path("/")
    cpuinfo_text = tree.read("proc/cpuinfo")
    if cpuinfo_text is None:
        raise BadInput(f"no proc/cpuinfo under {root}: not a host root")
    blocks = _parse_cpuinfo(cpuinfo_text)
    first = blocks[0] if blocks else {}
    flags_present = set(first.get("flags", "").split())

    try:
        by_proc = {int(b["processor"]): b for b in blocks if "processor" in b}
    except ValueError as exc:
        raise BadInput(f"{root}: proc/cpuinfo has a processor entry that is not a number ({exc})") from None
    online_text = tree.read("sys/devices/system/cpu/online")
    online = parse_cpulist(online_text) if online_text else tuple(by_proc)
    nodes = _read_nodes(tree, online)
    cpus = _read_cpus(tree, online, by_proc, {c: n.id for n in nodes for c in n.cpus})
    if not cpus:
        raise BadInput(f"no online CPU under {root}: proc/cpuinfo lists no processor and "
                       "sys/devices/system/cpu/online is missing or empty (not a host root)")
    reserved = set(tree.read_cpulist("sys/devices/system/cpu/isolated")) | set(
        tree.read_cpulist("sys/devices/system/cpu/nohz_full"))

    hostname = (tree.read("proc/sys/kernel/hostname") or "").strip()
    if live and not hostname:
        hostname = os.uname().nodename

    def _int(key: str) -> int | None:
        try:
            return int(first[key])
        except (KeyError, ValueError):
            return None

    return Topology(
        vendor=first.get("vendor_id", ""),
        model_name=first.get("model name", ""),
        family=_int("cpu family"),
        model=_int("model"),
        flags=tuple(f for f in ISA_FLAGS if f in flags_present),
        cpus=tuple(cpus),
        nodes=tuple(nodes),
        allowed_cpus=_read_allowed(tree, live, online),
        cgroup=_read_cgroup(tree),
        mem_total_kb=_meminfo_kb(tree.read("proc/meminfo")),
        source="detected" if live else f"sysroot:{root}",
        hostname=hostname,
        isolated_cpus=tuple(sorted(reserved & set(online))),
    )


def current_topology(sysroot: str | None = None, topology_file: str | None = None) -> Topology:
    """The topology the CLI works from: an injected file, a fixture root, or this host."""
    if topology_file:
        return load_topology_file(topology_file)
    if sysroot:
        if not Path(sysroot).is_dir():
            raise BadInput(f"sysroot is not a directory: {sysroot}")
        return read_topology(sysroot)
    return read_topology("/")
