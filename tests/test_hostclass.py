"""The host-class fingerprint: identical facts share an id, each fact that decides speed changes it."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from clirun import sdagent as run
from hosts import HOSTS, write_tree
from sdagent.host.hostclass import (HOSTCLASS_FORMAT, HostClass, NodeClass, Software, host_class, isa_class,
                                    memory_gib)
from sdagent.host.topology import CgroupLimit, NumaNode, Topology, read_topology

SW = Software(torch="2.13.0+cpu", openvino=None, ipex=None, sdagent="0.1.0")


@pytest.fixture(scope="module")
def topos(tmp_path_factory):
    base = tmp_path_factory.mktemp("hosts")
    return {name: read_topology(write_tree(base / name, spec)) for name, spec in HOSTS.items()}


def test_same_facts_same_id_and_a_pinned_value(topos):
    """Read twice from two trees of the same spec: one id. The pinned id is the canonical JSON's
    SHA-256 prefix: it changes only when the record's fields or their meaning change (bump the format)."""
    a = host_class(topos["xeon-vm-2core-amx"], SW)
    again = host_class(replace(topos["xeon-vm-2core-amx"], hostname="other", source="file:x"), SW)
    assert a == again and a.id == again.id
    assert len(a.id) == 12 and int(a.id, 16) >= 0
    assert a.format == HOSTCLASS_FORMAT
    # stable across runs and Python versions: the canonical JSON is sorted, whitespace-free ASCII
    assert a.canonical_json() == json.dumps(json.loads(a.canonical_json()), sort_keys=True, separators=(",", ":"))
    assert HostClass.from_dict(a.to_dict()) == a


def test_every_fixture_host_is_a_class_of_its_own(topos):
    """Each fixture host shape is its own class, except the one hybrid CPU read two ways (core types from
    /sys/devices/cpu_core and cpu_atom, or from cpu_capacity): the same host, the same class."""
    ids = {name: host_class(t, SW).id for name, t in topos.items()}
    assert ids.pop("hybrid-capacity") == ids["alderlake-hybrid"]
    assert len(set(ids.values())) == len(ids), ids
    assert host_class(topos["alderlake-hybrid"], SW).e_cores > 0


def _base() -> Topology:
    from sdagent.host.topology import Cpu

    cpus = tuple(Cpu(i, 0, i, 0, (i,)) for i in range(4))
    return Topology(vendor="GenuineIntel", model_name="Intel(R) Xeon(R) Processor", family=6, model=207,
                    flags=("avx2", "avx512f", "avx512_bf16", "amx_bf16"), cpus=cpus,
                    nodes=(NumaNode(0, (0, 1, 2, 3), 24 * 1024 * 1024 - 600_000),), allowed_cpus=(0, 1, 2, 3),
                    mem_total_kb=24 * 1024 * 1024 - 600_000)


def _smt() -> Topology:
    from sdagent.host.topology import Cpu

    t = _base()
    cpus = tuple(Cpu(i, 0, i % 2, 0, (i % 2, i % 2 + 2)) for i in range(4))
    return replace(t, cpus=cpus)


def _two_nodes() -> Topology:
    t = _base()
    half = 12 * 1024 * 1024 - 300_000
    return replace(t, nodes=(NumaNode(0, (0, 1), half), NumaNode(1, (2, 3), half)))


def _two_sockets() -> Topology:
    from sdagent.host.topology import Cpu

    t = _base()
    return replace(t, cpus=tuple(Cpu(i, i // 2, i % 2, 0, (i,)) for i in range(4)))


#: One change per fact that decides speed; each must give another id.
CHANGES = {
    "model name": lambda t, s: (replace(t, model_name="AMD EPYC"), s),
    "vendor": lambda t, s: (replace(t, vendor="AuthenticAMD"), s),
    "cpu model": lambda t, s: (replace(t, model=143), s),
    "isa flags, same class": lambda t, s: (replace(t, flags=t.flags + ("avx512_fp16",)), s),
    "isa class": lambda t, s: (replace(t, flags=("avx2",)), s),
    "cores": lambda t, s: (replace(t, cpus=t.cpus[:2], nodes=(NumaNode(0, (0, 1), t.nodes[0].mem_total_kb),),
                                   allowed_cpus=(0, 1)), s),
    "smt": lambda t, s: (_smt(), s),
    "sockets": lambda t, s: (_two_sockets(), s),
    "numa layout": lambda t, s: (_two_nodes(), s),
    "memory per node": lambda t, s: (replace(t, nodes=(NumaNode(0, (0, 1, 2, 3), 64 * 1024 * 1024),)), s),
    "cpuset": lambda t, s: (replace(t, allowed_cpus=(0, 1)), s),
    "cgroup quota": lambda t, s: (replace(t, cgroup=CgroupLimit(2, 200000, 100000)), s),
    "isolated cpus": lambda t, s: (replace(t, isolated_cpus=(3,)), s),
    "hybrid e-cores": lambda t, s: (replace(t, cpus=t.cpus[:2] + tuple(replace(c, kind="E") for c in t.cpus[2:])), s),
    "torch": lambda t, s: (t, replace(s, torch="2.12.0+cpu")),
    "openvino": lambda t, s: (t, replace(s, openvino="2026.4.1")),
    "ipex": lambda t, s: (t, replace(s, ipex="2.8.0")),
    "agent": lambda t, s: (t, replace(s, sdagent="0.2.0")),
}


@pytest.mark.parametrize("what", list(CHANGES))
def test_each_fact_that_decides_speed_changes_the_id(what):
    base = host_class(_base(), SW)
    t, s = CHANGES[what](_base(), SW)
    other = host_class(t, s)
    assert other.id != base.id, what


def test_what_does_not_decide_speed_keeps_the_id():
    """Hostname, how the topology was read, CPU numbering and a few MiB of MemTotal are not the class."""
    base = host_class(_base(), SW)
    t = _base()
    few_mib_less = replace(t, nodes=(NumaNode(0, (0, 1, 2, 3), t.nodes[0].mem_total_kb - 4096),))
    for other in (replace(t, hostname="web-2"), replace(t, source="sysroot:/x"), few_mib_less,
                  replace(t, model_name="Intel(R)  Xeon(R) Processor ")):
        assert host_class(other, SW).id == base.id


@pytest.mark.parametrize("flags, cls", [
    (("avx2", "avx512f", "avx512_bf16", "amx_bf16"), "amx"),
    (("avx2", "avx512f", "avx512_bf16"), "avx512_bf16"),
    (("avx2", "avx512f"), "avx512"),
    (("avx2", "fma"), "avx2"),
    ((), "baseline"),
])
def test_isa_class(flags, cls):
    assert isa_class(flags) == cls


@pytest.mark.parametrize("kb, gib", [(None, None), (0, 0), (24_000_000, 24), (131_000_000, 128),
                                     (263_000_000, 256), (1_000_000, 8)])
def test_memory_rounds_up_to_the_installed_size(kb, gib):
    assert memory_gib(kb) == gib


def test_fixture_hosts_describe_their_class(topos):
    spr = host_class(topos["spr-2s-snc"], SW)
    assert (spr.isa_class, spr.sockets, spr.cores_per_socket, spr.threads_per_core) == ("amx", 2, 56, 2)
    assert [n.physical_cores for n in spr.nodes] == [28, 28, 28, 28]
    assert all(isinstance(n, NodeClass) and n.logical_cpus == 56 for n in spr.nodes)
    c = host_class(topos["container-v1-quota"], SW)
    assert (c.allowed_cpus, c.cgroup_cpus) == (16, 2.5)
    assert host_class(topos["epyc-2core-avx2"], SW).isa_class == "avx2"
    assert host_class(topos["epyc-2core-zen5"], SW).isa_class == "avx512_bf16"


def test_topology_json_prints_the_class_and_the_same_id_twice(tmp_path):
    """Through the CLI: `sdagent topology --json` carries the class; two runs, one id; the text view names it;
    the file it writes still feeds --topology-file, and the injected topology gives the same class."""
    spr = write_tree(tmp_path / "spr", HOSTS["spr-2s-smt"])
    ids = []
    for _ in range(2):
        r = run("--sysroot", str(spr), "topology", "--json", "-o", str(tmp_path / "t.json"))
        assert r.returncode == 0, r.stderr
        d = json.loads(r.stdout)
        hc = d["host_class"]
        assert hc["format"] == HOSTCLASS_FORMAT and hc["isa_class"] == "amx" and hc["software"]["sdagent"]
        ids.append(hc["id"])
    assert ids[0] == ids[1]
    r = run("--topology-file", str(tmp_path / "t.json"), "topology", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["host_class"]["id"] == ids[0]
    human = run("--sysroot", str(spr), "topology")
    assert f"host class  {ids[0]} (amx, 2x56 cores (x2 SMT)" in human.stdout
