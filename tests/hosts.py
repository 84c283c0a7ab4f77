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

    @property
    def ncpus(self) -> int:
        return self.sockets * self.cores_per_socket * self.threads_per_core


def cpu_layout(spec: HostSpec) -> list[tuple[int, int, int, int]]:
    """(cpu, socket, core_id, node) in Linux's enumeration: all first threads, then siblings."""
    out = []
    per_node = spec.cores_per_socket // spec.nodes_per_socket
    cpu = 0
    for thread in range(spec.threads_per_core):
        for s in range(spec.sockets):
            for c in range(spec.cores_per_socket):
                node = s * spec.nodes_per_socket + c // per_node
                out.append((cpu, s, c, node))
                cpu += 1
    return out


def write_tree(root: Path, spec: HostSpec) -> Path:
    """Write the spec's /proc and /sys files under root; returns root."""
    layout = cpu_layout(spec)
    siblings: dict[tuple[int, int], list[int]] = {}
    for cpu, s, c, _ in layout:
        siblings.setdefault((s, c), []).append(cpu)

    def w(rel: str, text: str) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    blocks = []
    for cpu, s, c, _ in sorted(layout):
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
    for cpu, s, c, _ in layout:
        base = f"sys/devices/system/cpu/cpu{cpu}/topology"
        w(f"{base}/physical_package_id", f"{s}\n")
        w(f"{base}/core_id", f"{c}\n")
        w(f"{base}/thread_siblings_list", format_cpulist(siblings[(s, c)]) + "\n")
    nnodes = spec.sockets * spec.nodes_per_socket
    for n in range(nnodes):
        cpus = [cpu for cpu, _, _, node in layout if node == n]
        w(f"sys/devices/system/node/node{n}/cpulist", format_cpulist(cpus) + "\n")
        w(f"sys/devices/system/node/node{n}/meminfo",
          f"Node {n} MemTotal:       {spec.mem_kb // nnodes} kB\n")
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
}
