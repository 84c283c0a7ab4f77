"""Fixture host trees: /proc and /sys as the kernel lays them out, for the topology reader.

Trees are generated (a 224-CPU host is ~700 files) from a spec that mirrors what
the kernel exposes; the 2-core VM spec is what this project's CI VM shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sdagent.host.topology import format_cpulist

SPR_FLAGS = ("fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl "
             "avx512_vnni avx512_bf16 avx512_fp16 avx_vnni amx_bf16 amx_tile amx_int8")
EPYC_FLAGS = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c bmi2"
#: AMD EPYC (Zen 5, family 26) KVM guest: AVX-512 with AVX512-BF16, no AMX (a CI VM of this project).
ZEN5_VM_FLAGS = ("fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl "
                 "avx512_vnni avx512_bf16 avx_vnni avx512vbmi hypervisor")
EMR_VM_FLAGS = ("fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni "
                "avx512_bf16 avx_vnni avx512_fp16 amx_bf16 amx_tile amx_int8 hypervisor")


@dataclass
class HostSpec:
    name: str
    model_name: str
    vendor: str
    family: int
    model: int
    flags: str
    sockets: int
    cores_per_socket: int
    threads_per_core: int
    nodes_per_socket: int = 1
    mem_kb: int = 256 * 1024 * 1024
    allowed: str | None = None  # Cpus_allowed_list; None = all
    cgroup: str | None = None  # "v2:QUOTA PERIOD" or "v1:QUOTA/PERIOD"
    cgroup_path: str = "/"
    extra: dict = field(default_factory=dict)
    #: node -> MemTotal kB, overriding the even split (0: a memoryless node)
    node_mem_kb: dict[int, int] = field(default_factory=dict)
    #: the kernel's node distance table; None: 10 local, 12 same socket, 21 across sockets
    distances: list[list[int]] | None = None
    #: E-cores per socket after the P-cores (one thread each): a hybrid CPU (12th-gen Core and later)
    e_cores_per_socket: int = 0
    #: how the kernel shows core types: "pmu" (/sys/devices/cpu_core|cpu_atom/cpus) or "capacity"
    core_types_via: str = "pmu"
    isolated: str | None = None  # /sys/devices/system/cpu/isolated (isolcpus=)

    @property
    def ncpus(self) -> int:
        return len(cpu_layout(self))


def cpu_layout(spec: HostSpec) -> list[tuple[int, int, int, int, str]]:
    """(cpu, socket, core_id, node, kind) in Linux's enumeration: all first threads, then siblings, then
    the E-cores of a hybrid CPU (kind "P"/"E" there, "" elsewhere)."""
    out = []
    per_node = spec.cores_per_socket // spec.nodes_per_socket
    kind = "P" if spec.e_cores_per_socket else ""
    cpu = 0
    for thread in range(spec.threads_per_core):
        for s in range(spec.sockets):
            for c in range(spec.cores_per_socket):
                node = s * spec.nodes_per_socket + c // per_node
                out.append((cpu, s, c, node, kind))
                cpu += 1
    for s in range(spec.sockets):
        for c in range(spec.e_cores_per_socket):
            out.append((cpu, s, spec.cores_per_socket + c, s * spec.nodes_per_socket + spec.nodes_per_socket - 1, "E"))
            cpu += 1
    return out


def write_tree(root: Path, spec: HostSpec) -> Path:
    """Write the spec's /proc and /sys files under root; returns root."""
    layout = cpu_layout(spec)
    siblings: dict[tuple[int, int], list[int]] = {}
    for cpu, s, c, _, _ in layout:
        siblings.setdefault((s, c), []).append(cpu)

    def w(rel: str, text: str) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    blocks = []
    for cpu, s, c, _, _ in sorted(layout):
        blocks.append(
            f"processor\t: {cpu}\nvendor_id\t: {spec.vendor}\ncpu family\t: {spec.family}\n"
            f"model\t\t: {spec.model}\nmodel name\t: {spec.model_name}\nphysical id\t: {s}\n"
            f"siblings\t: {spec.cores_per_socket * spec.threads_per_core}\ncore id\t\t: {c}\n"
            f"cpu cores\t: {spec.cores_per_socket}\nflags\t\t: {spec.flags}\n"
        )
    w("proc/cpuinfo", "\n".join(blocks) + "\n")
    w("proc/meminfo", f"MemTotal:       {spec.mem_kb} kB\nMemFree:        {spec.mem_kb // 2} kB\n")
    w("proc/sys/kernel/hostname", spec.name + "\n")
    allowed = spec.allowed or f"0-{spec.ncpus - 1}"
    w("proc/self/status", f"Name:\tpython3\nCpus_allowed_list:\t{allowed}\n")
    w("sys/devices/system/cpu/online", f"0-{spec.ncpus - 1}\n")
    for cpu, s, c, _, kind in layout:
        base = f"sys/devices/system/cpu/cpu{cpu}/topology"
        w(f"{base}/physical_package_id", f"{s}\n")
        w(f"{base}/core_id", f"{c}\n")
        w(f"{base}/thread_siblings_list", format_cpulist(siblings[(s, c)]) + "\n")
        if kind and spec.core_types_via == "capacity":
            w(f"sys/devices/system/cpu/cpu{cpu}/cpu_capacity", "1024\n" if kind == "P" else "619\n")
    if spec.e_cores_per_socket and spec.core_types_via == "pmu":
        for kind, dev in (("P", "cpu_core"), ("E", "cpu_atom")):
            w(f"sys/devices/{dev}/cpus", format_cpulist(cpu for cpu, *_, k in layout if k == kind) + "\n")
    if spec.isolated is not None:
        w("sys/devices/system/cpu/isolated", spec.isolated + "\n")
    w("sys/devices/system/cpu/nohz_full", "(null)\n")  # what a kernel without nohz_full= shows
    nnodes = spec.sockets * spec.nodes_per_socket
    for n in range(nnodes):
        cpus = [cpu for cpu, _, _, node, _ in layout if node == n]
        w(f"sys/devices/system/node/node{n}/cpulist", format_cpulist(cpus) + "\n")
        w(f"sys/devices/system/node/node{n}/meminfo",
          f"Node {n} MemTotal:       {spec.node_mem_kb.get(n, spec.mem_kb // nnodes)} kB\n")
        row = spec.distances[n] if spec.distances else [
            10 if m == n else 12 if m // spec.nodes_per_socket == n // spec.nodes_per_socket else 21
            for m in range(nnodes)]
        w(f"sys/devices/system/node/node{n}/distance", " ".join(str(x) for x in row) + "\n")
    if spec.cgroup:
        version, _, value = spec.cgroup.partition(":")
        rel = spec.cgroup_path.strip("/")
        if version == "v2":
            w("proc/self/cgroup", f"0::{spec.cgroup_path}\n")
            w(f"sys/fs/cgroup/{rel}/cpu.max".replace("//", "/"), value + "\n")
            w("sys/fs/cgroup/cpu.max", "max 100000\n")
        else:
            quota, _, period = value.partition("/")
            w("proc/self/cgroup", f"4:cpu,cpuacct:{spec.cgroup_path}\n3:memory:{spec.cgroup_path}\n")
            base = f"sys/fs/cgroup/cpu,cpuacct/{rel}".rstrip("/")
            w(f"{base}/cpu.cfs_quota_us", quota + "\n")
            w(f"{base}/cpu.cfs_period_us", period + "\n")
    return root


SPR_NAME = "Intel(R) Xeon(R) Platinum 8480+"

HOSTS: dict[str, HostSpec] = {
    # The 2-core AMD EPYC VM the project was first measured on: AVX2 only.
    "epyc-2core-avx2": HostSpec("epyc-2core-avx2", "AMD EPYC 7B13", "AuthenticAMD", 25, 1, EPYC_FLAGS,
                                1, 2, 1, mem_kb=24 * 1024 * 1024),
    # A 2-core KVM guest of an AMD EPYC Zen 5: AVX512-BF16 without AMX.
    "epyc-2core-zen5": HostSpec("epyc-2core-zen5", "AMD EPYC", "AuthenticAMD", 26, 2, ZEN5_VM_FLAGS,
                                1, 2, 1, mem_kb=24 * 1024 * 1024),
    # A 2-core KVM guest on an Emerald Rapids host (AMX exposed), like some CI VMs.
    "xeon-vm-2core-amx": HostSpec("xeon-vm-2core-amx", "Intel(R) Xeon(R) Processor", "GenuineIntel", 6, 207,
                                  EMR_VM_FLAGS, 1, 2, 1, mem_kb=24 * 1024 * 1024),
    # 2-socket Sapphire Rapids, 56 cores per socket, SMT on: 224 CPUs, 2 NUMA nodes.
    "spr-2s-smt": HostSpec("spr-2s-smt", SPR_NAME, "GenuineIntel", 6, 143, SPR_FLAGS, 2, 56, 2),
    # The same with sub-NUMA clustering (SNC-2): 4 NUMA nodes of 28 cores.
    "spr-2s-snc": HostSpec("spr-2s-snc", SPR_NAME, "GenuineIntel", 6, 143, SPR_FLAGS, 2, 56, 2,
                           nodes_per_socket=2),
    # A container on that host: cgroup v2 quota of 4 CPUs, affinity to 4 cores of socket 0.
    "container-4cpu": HostSpec("container-4cpu", SPR_NAME, "GenuineIntel", 6, 143, SPR_FLAGS, 2, 56, 2,
                               allowed="8-11", cgroup="v2:400000 100000", cgroup_path="/kubepods/pod42/c1"),
    # A cgroup v1 container: 16 CPUs allowed (8 cores with their siblings), quota 2.5 CPUs.
    "container-v1-quota": HostSpec("container-v1-quota", SPR_NAME, "GenuineIntel", 6, 143, SPR_FLAGS, 2, 56, 2,
                                   allowed="0-7,112-119", cgroup="v1:250000/100000", cgroup_path="/docker/abc"),
    # Issue 19 item 1: a Kubernetes pod with a CPU limit (cgroup v2 quota 7.65 CPUs) and no cpuset of its own:
    # its affinity mask is the whole 2-socket host, shared with every other replica.
    "pod-quota-fullmask": HostSpec("pod-quota-fullmask", SPR_NAME, "GenuineIntel", 6, 143, SPR_FLAGS, 2, 56, 2,
                                   cgroup="v2:765000 100000", cgroup_path="/kubepods/burstable/pod7/c1"),
    # Issue 19 item 2: a 2-socket host whose node 0 has no memory (MemTotal: 0 kB; a CXL/HBM-less layout).
    "2s-node0-memoryless": HostSpec("2s-node0-memoryless", "AMD EPYC 9654", "AuthenticAMD", 25, 17, ZEN5_VM_FLAGS,
                                    2, 8, 1, node_mem_kb={0: 0}),
    # Issue 19 items 2 and 4: a Threadripper 2990WX-like socket: 4 dies (NUMA nodes), only 0 and 2 with memory;
    # node 1 is nearest node 0, node 3 nearest node 2 (the distance table).
    "tr-4node-memoryless": HostSpec("tr-4node-memoryless", "AMD Ryzen Threadripper 2990WX", "AuthenticAMD", 23, 8,
                                    EPYC_FLAGS, 1, 32, 2, nodes_per_socket=4, node_mem_kb={1: 0, 3: 0},
                                    distances=[[10, 16, 32, 32], [16, 10, 32, 32], [32, 32, 10, 16],
                                               [32, 32, 16, 10]]),
    # Issue 19 item 4: Sapphire Rapids in SNC-4 (4 sub-NUMA nodes per socket), one socket.
    "spr-1s-snc4": HostSpec("spr-1s-snc4", SPR_NAME, "GenuineIntel", 6, 143, SPR_FLAGS, 1, 56, 2, nodes_per_socket=4),
    # Issue 19 item 5: Alder Lake (i9-12900K): 8 P-cores with SMT + 8 E-cores, core types from the hybrid PMUs.
    "alderlake-hybrid": HostSpec("alderlake-hybrid", "12th Gen Intel(R) Core(TM) i9-12900K", "GenuineIntel", 6,
                                 151, EPYC_FLAGS + " avx_vnni", 1, 8, 2, e_cores_per_socket=8,
                                 mem_kb=64 * 1024 * 1024),
    # The same shape where the kernel shows core types only as cpu_capacity (no hybrid PMU devices).
    "hybrid-capacity": HostSpec("hybrid-capacity", "12th Gen Intel(R) Core(TM) i9-12900K", "GenuineIntel", 6,
                                151, EPYC_FLAGS + " avx_vnni", 1, 8, 2, e_cores_per_socket=8,
                                core_types_via="capacity", mem_kb=64 * 1024 * 1024),
    # Issue 19 item 6: isolcpus=6-7 on an 8-core host whose process mask includes them.
    "isolcpus-8core": HostSpec("isolcpus-8core", "Intel(R) Xeon(R) Gold 6338", "GenuineIntel", 6, 106,
                               EPYC_FLAGS + " avx512f avx512bw avx512vl avx512dq", 1, 8, 1, isolated="6-7",
                               mem_kb=32 * 1024 * 1024),
}
