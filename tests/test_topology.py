"""The topology reader on fixture trees of real host shapes."""

from __future__ import annotations

import json

import pytest

from hosts import HOSTS, write_tree
from sdagent.errors import BadInput
from sdagent.host.topology import (Topology, format_cpulist, load_topology_file, parse_cpulist,
                              read_topology)


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("hosts")
    return {name: write_tree(base / name, spec) for name, spec in HOSTS.items()}


def test_cpulist_roundtrip():
    assert parse_cpulist("0-3,8,10-11") == (0, 1, 2, 3, 8, 10, 11)
    assert parse_cpulist("0-6:2") == (0, 2, 4, 6)
    assert format_cpulist([3, 0, 1, 2, 8, 10, 11]) == "0-3,8,10-11"
    assert parse_cpulist("") == ()
    with pytest.raises(ValueError):
        parse_cpulist("a-b")


@pytest.mark.parametrize("name, sockets, cores, cpus, tpc, nodes, allowed, quota, flags", [
    ("epyc-2core-avx2", 1, 2, 2, 1, 1, 2, None, {"avx2", "fma"}),
    ("xeon-vm-2core-amx", 1, 2, 2, 1, 1, 2, None, {"amx_bf16", "avx512_bf16", "avx512bw"}),
    ("spr-2s-smt", 2, 112, 224, 2, 2, 224, None, {"amx_bf16", "amx_tile", "avx512_bf16"}),
    ("spr-2s-snc", 2, 112, 224, 2, 4, 224, None, {"amx_bf16"}),
    ("container-4cpu", 2, 112, 224, 2, 2, 4, 4.0, {"amx_bf16"}),
    ("container-v1-quota", 2, 112, 224, 2, 2, 16, 2.5, {"amx_bf16"}),
])
def test_fixture_hosts(trees, name, sockets, cores, cpus, tpc, nodes, allowed, quota, flags):
    t = read_topology(trees[name])
    assert (t.sockets, t.physical_cores, t.logical_cpus, t.threads_per_core) == (sockets, cores, cpus, tpc)
    assert len(t.nodes) == nodes
    assert len(t.allowed_cpus) == allowed
    assert (t.cgroup.cpus if t.cgroup else None) == quota
    assert flags <= set(t.flags)
    assert t.source.startswith("sysroot:")


def test_epyc_has_no_bf16(trees):
    t = read_topology(trees["epyc-2core-avx2"])
    assert not t.has("avx512_bf16") and not t.has("amx_bf16") and not t.has("avx512f")


def test_smt_siblings_and_nodes(trees):
    t = read_topology(trees["spr-2s-smt"])
    assert t.cpu(0).siblings == (0, 112)
    assert t.cpu(112).core == 0 and t.cpu(112).socket == 0
    assert t.cpu(56).socket == 1 and t.cpu(56).node == 1
    assert format_cpulist(t.nodes[0].cpus) == "0-55,112-167"
    snc = read_topology(trees["spr-2s-snc"])
    assert [format_cpulist(n.cpus) for n in snc.nodes] == [
        "0-27,112-139", "28-55,140-167", "56-83,168-195", "84-111,196-223"]


def test_cgroup_v2_takes_the_tightest_ancestor(trees, tmp_path):
    t = read_topology(trees["container-4cpu"])
    assert t.cgroup.version == 2 and t.cgroup.quota_us == 400000
    # A tighter limit higher up the hierarchy wins.
    (trees["container-4cpu"] / "sys/fs/cgroup/kubepods/cpu.max").write_text("150000 100000\n")
    try:
        assert read_topology(trees["container-4cpu"]).cgroup.cpus == 1.5
    finally:
        (trees["container-4cpu"] / "sys/fs/cgroup/kubepods/cpu.max").unlink()


def test_json_roundtrip(trees, tmp_path):
    t = read_topology(trees["spr-2s-snc"])
    f = tmp_path / "topo.json"
    f.write_text(json.dumps(t.to_dict()))
    back = load_topology_file(f)
    assert back.cpus == t.cpus and back.nodes == t.nodes and back.flags == t.flags
    assert back.source == f"file:{f}"


def test_bad_topology_file(tmp_path):
    f = tmp_path / "t.json"
    f.write_text('{"cpus": [{"id": 0}]}')
    with pytest.raises(BadInput, match="not a topology record"):
        load_topology_file(f)
    with pytest.raises(BadInput, match="not found"):
        load_topology_file(tmp_path / "missing.json")
    f.write_text("{nope")
    with pytest.raises(BadInput, match="not valid JSON"):
        load_topology_file(f)
    f.write_text('{"flags": ["avx2"], "flags": ["amx_bf16"]}')
    with pytest.raises(BadInput, match="duplicate key 'flags'"):
        load_topology_file(f)


def test_live_host_reads():
    t = read_topology("/")
    assert t.logical_cpus >= 1 and t.physical_cores >= 1
    assert set(t.allowed_cpus) <= {c.id for c in t.cpus}
    assert isinstance(t, Topology) and t.source == "detected"


def test_not_a_root(tmp_path):
    with pytest.raises(BadInput, match="not a host root"):
        read_topology(tmp_path)


@pytest.mark.parametrize("cpuinfo", ["", "garbage\nfoo: bar\n"])
def test_a_sysroot_whose_cpuinfo_lists_no_processor_is_refused(tmp_path, cpuinfo):
    """An empty or garbage proc/cpuinfo (no `processor` entries, no cpu/online) is bad input, not a host
    of 0 CPUs that the planner then trips over."""
    from sdagent.errors import BadInput
    from sdagent.host.topology import read_topology

    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text(cpuinfo)
    with pytest.raises(BadInput, match="no online CPU"):
        read_topology(tmp_path)
